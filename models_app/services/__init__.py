"""Services: the only code that writes registry and runtime state."""
