# Prometheus for the compose fleet's `monitoring` profile, built from nothing (no base image
# can be pulled here): Debian's prometheus binary, exactly the shared libraries it links, its
# web assets, the scrape config (deploy/prometheus.yml), and a data directory any user may
# write (compose runs it as GAUNTLET_USER, so that it can read the token file you wrote).
# deploy/build-prometheus-image.sh prepares rootfs/.
FROM scratch
COPY rootfs/ /
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=0.0.0.0:9090"]
