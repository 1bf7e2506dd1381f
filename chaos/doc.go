// Package chaos injects faults into a running Confetti deployment (killed
// and partitioned etcd members, proxies and cache nodes) and checks the
// subscription contract and write durability against a reference watcher
// of etcd.
package chaos
