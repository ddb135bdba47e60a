from twisted.application.service import ServiceMaker

agw = ServiceMaker(
    "agw",
    "agwtx.tap",
    "An application gateway: HTTP/HTTPS/WebSocket reverse proxy and load balancer.",
    "agw",
)
