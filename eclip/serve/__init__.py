"""`eclip serve`: product search over an EMB_DIR as a FastAPI service and a web page."""
