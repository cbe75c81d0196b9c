"""The models a server may serve: loading on demand, leases, keep_alive, unloading."""
