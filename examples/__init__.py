"""Models written the way a researcher writes them, run through ``model.factory``."""
