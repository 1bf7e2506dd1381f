// Package etcdcompat holds tests, built with the etcdcompat tag, that run
// clients nobody here wrote (the real etcdctl, clientv3 programs, plain
// HTTP requests of lua-resty-etcd's shape) against `confetti dev`'s etcd
// front door. `make etcd-compat` builds the binaries and runs them.
package etcdcompat
