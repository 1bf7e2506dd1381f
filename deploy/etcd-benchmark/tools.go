//go:build tools

// etcd's load generator, built from etcd's own modules: every etcd module
// is pinned to the one v3.6 release that publishes tools/benchmark (the
// module go.etcd.io/etcd/v3 has no v3.7 release). make etcd-compat runs it
// against confetti dev's etcd front door.
package tools

import _ "go.etcd.io/etcd/v3/tools/benchmark"
