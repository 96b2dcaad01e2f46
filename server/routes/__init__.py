"""Thin routers: each route declares its shape and calls one service function."""
