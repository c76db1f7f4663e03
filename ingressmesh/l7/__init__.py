"""The L7 layer: Interlock's `com.docker.lb.*` labels served by HAProxy.

labels (untrusted text → checked values) → routes (pure planner) → slots + render (HAProxy
config) → runtime/haproxy (the running proxy) ← proxy (the loop inside each proxy task);
proxy_service keeps the swarm service that runs those tasks in shape.
"""
