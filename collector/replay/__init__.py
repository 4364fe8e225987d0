"""Offline sources: replay of recorded klines, optionally scaled out to many virtual symbols."""
