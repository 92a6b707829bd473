"""Session fixtures for a local SQS-compatible server (moto)."""
