"""Interlock's documented examples (docs.docker.com ee/ucp/interlock/usage/*, MKE 3.x) as the docs
give them: `docker service create` commands and compose files, verbatim, for
test_interlock_examples.py (and as docs/l7-routing.md shows them)."""

# The docs' commands, verbatim (usage/index.md, default-backend.md, canary.md, context.md,
# redirects.md, sessions.md, websockets.md, interlock-vip-mode.md).
SAMPLE = """docker service create --name demo --network demo --label com.docker.lb.hosts=demo.local
    --label com.docker.lb.port=8080 ehazlett/docker-demo"""
DEFAULT_BACKEND = """docker service create --name demo-default --network demo --detach=false --replicas=1
    --label com.docker.lb.default_backend=true --label com.docker.lb.port=8080 ehazlett/interlock-default-app"""
CANARY_V1 = """docker service create --name demo-v1 --network demo --detach=false --replicas=4
    --label com.docker.lb.hosts=demo.local --label com.docker.lb.port=8080 --env METADATA="demo-version-1"
    ehazlett/docker-demo"""
CANARY_V2 = """docker service create --name demo-v2 --network demo --detach=false
    --label com.docker.lb.hosts=demo.local --label com.docker.lb.port=8080 --env METADATA="demo-version-2"
    --env VERSION="0.2" ehazlett/docker-demo"""
CONTEXT = """docker service create --name demo --network demo --detach=false
    --label com.docker.lb.hosts=demo.local --label com.docker.lb.port=8080
    --label com.docker.lb.context_root=/app --label com.docker.lb.context_root_rewrite=true
    --env METADATA="demo-context-root" ehazlett/docker-demo"""
REDIRECTS = """docker service create --name demo --network demo --detach=false
    --label com.docker.lb.hosts=old.local,new.local --label com.docker.lb.port=8080
    --label com.docker.lb.redirects=http://old.local,http://new.local --env METADATA="demo-new"
    ehazlett/docker-demo"""
STICKY = """docker service create --name demo --network demo --detach=false --replicas=5
    --label com.docker.lb.hosts=demo.local --label com.docker.lb.sticky_session_cookie=session
    --label com.docker.lb.port=8080 --env METADATA="demo-sticky" ehazlett/docker-demo"""
WEBSOCKETS = """docker service create --name demo --network demo --detach=false
    --label com.docker.lb.hosts=demo.local --label com.docker.lb.port=8080
    --label com.docker.lb.websocket_endpoints=/ws ehazlett/websocket-chat"""
VIP = """docker service create --name demo --network demo --detach=false --replicas=4
    --label com.docker.lb.hosts=demo.local --label com.docker.lb.port=8080
    --label com.docker.lb.backend_mode=vip --env METADATA="demo-vip-1" ehazlett/docker-demo"""
# Not an Interlock example: a labelled service that keeps network `demo` needed between the
# examples (otherwise `l7 deploy` detaches it after each and attaches it again: a proxy rollout).
WHOAMI = """docker service create --name whoami --network demo --label com.docker.lb.hosts=whoami.local
    --label com.docker.lb.port=80 traefik/whoami"""

# usage/index.md, "Publish a service with a web interface"
STACK_WEB = """version: "3.2"

services:
  demo:
    image: ehazlett/docker-demo
    deploy:
      replicas: 1
      labels:
        com.docker.lb.hosts: app.example.org
        com.docker.lb.network: demo_demo-network
        com.docker.lb.port: 8080
    networks:
      - demo-network

networks:
  demo-network:
    driver: overlay
"""
# usage/tls.md: the certificate, "Let the proxy handle TLS", "Let your service handle TLS"
OPENSSL = """openssl req -new -newkey rsa:4096 -days 3650 -nodes -x509
    -subj "/C=US/ST=CA/L=SF/O=Docker-demo/CN=app.example.org" -keyout app.example.org.key -out app.example.org.cert"""
STACK_TLS = """version: "3.2"

services:
  demo:
    image: ehazlett/docker-demo
    deploy:
      replicas: 1
      labels:
        com.docker.lb.hosts: app.example.org
        com.docker.lb.network: demo-network
        com.docker.lb.port: 8080
        com.docker.lb.ssl_cert: demo_app.example.org.cert
        com.docker.lb.ssl_key: demo_app.example.org.key
    environment:
      METADATA: proxy-handles-tls
    networks:
      - demo-network

networks:
  demo-network:
    driver: overlay
secrets:
  app.example.org.cert:
    file: ./app.example.org.cert
  app.example.org.key:
    file: ./app.example.org.key
"""
STACK_PASSTHROUGH = """version: "3.2"

services:
  demo:
    image: ehazlett/docker-demo
    command: --tls-cert=/run/secrets/cert.pem --tls-key=/run/secrets/key.pem
    deploy:
      replicas: 1
      labels:
        com.docker.lb.hosts: app.example.org
        com.docker.lb.network: demo-network
        com.docker.lb.port: 8080
        com.docker.lb.ssl_passthrough: "true"
    environment:
      METADATA: end-to-end-TLS
    networks:
      - demo-network
    secrets:
      - source: app.example.org.cert
        target: /run/secrets/cert.pem
      - source: app.example.org.key
        target: /run/secrets/key.pem

networks:
  demo-network:
    driver: overlay
secrets:
  app.example.org.cert:
    file: ./app.example.org.cert
  app.example.org.key:
    file: ./app.example.org.key
"""
# usage/default-service.md
STACK_DEFAULT = """version: "3.2"

services:
  demo:
    image: ehazlett/interlock-default-app
    deploy:
      replicas: 1
      labels:
        com.docker.lb.default_backend: "true"
        com.docker.lb.port: 80
    networks:
      - demo-network

networks:
  demo-network:
    driver: overlay
"""
# The operator's side of the TLS example: the stack's secrets may reach the proxies (docs/l7-routing.md,
# "Which secrets reach the proxies"), by exact name.
STACK_SECRETS = ("demo_app.example.org.cert", "demo_app.example.org.key")
