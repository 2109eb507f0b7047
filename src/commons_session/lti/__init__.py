"""LTI, the protocols a platform (Canvas) uses to launch us, free of the web framework like the
domain: ``v11`` (LTI 1.1 launches, OAuth 1.0a) and ``v13`` (LTI 1.3 OIDC login and id_token).
The routes that serve them are in ``http/``; docs/lti13.md is the guide."""
