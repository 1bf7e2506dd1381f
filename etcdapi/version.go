package etcdapi

import "go.etcd.io/etcd/api/v3/version"

// etcdVersion is the etcd release whose API this front door speaks.
var etcdVersion = version.Version

// storageVersion is reported by Status the way etcd 3.6 and later do.
const storageVersion = "3.6.0"

// clusterVersion is the cluster version /version reports.
const clusterVersion = "3.7.0"
