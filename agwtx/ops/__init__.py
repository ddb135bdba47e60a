"""Operations: the admin site, metrics, status page, access log, systemd, workers, config watch and start-up."""
