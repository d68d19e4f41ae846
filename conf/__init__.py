"""Configuration samples (server.ini, client.ini) and their loader, `conf.settings`."""
