"""TLS: HTTPS listeners (SNI, ALPN, client certificates, OCSP) and end-to-end TLS to backends."""
