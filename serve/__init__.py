"""Online scoring on Ray Serve: ``serve.app:build_app`` (see :mod:`serve.app`)."""
