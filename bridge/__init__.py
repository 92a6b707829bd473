"""absorb-bridge: change detection for Absorb LMS enrollments, delivered as CloudEvents."""

__version__ = "0.1.0"
