"""The HTTP edge: ``create_app(settings)`` builds the FastAPI application."""
