"""One module of click commands per concern; cli.py registers them."""
