// Command etcd is etcd's server, built from its Go module at the version
// go.mod pins, for Confetti's images and tests: the etcd release binaries
// cannot be downloaded here, and `go install` refuses etcd's modules.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
