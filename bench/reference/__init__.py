"""A minimal FastAPI + uvicorn + asyncpg service with Paycast's hot-path semantics (see app.py)."""
