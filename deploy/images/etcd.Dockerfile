# etcd, etcdctl and etcdutl, built from etcd's Go modules (deploy/etcd),
# and etcd-probe, its health check; static, FROM scratch. The data directory is a volume; the root
# filesystem can be read-only.
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY etcd etcdctl etcdutl etcd-probe /usr/local/bin/
# The data directory's mount point, owned by the user, so that a named
# volume mounted there starts writable.
COPY --chown=65532:65532 data/ /data/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/etcd"]
