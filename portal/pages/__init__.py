"""The portal's pages, one module per area; each handler is registered in portal.app."""
