"""The domain: tokens, LTI launches, sessions and terms. No web framework, no database driver."""
