//go:build tools

// The commands built beside etcd from this module's pinned versions:
// etcdctl (the client) and etcdutl (snapshot restore).
package main

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
)
