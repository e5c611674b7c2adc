"""Running the service scaled out: local processes (make cluster) and their helpers."""
