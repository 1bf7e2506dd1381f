// Package buildinfo says which Confetti a process is: the module version
// and VCS revision the Go toolchain stamped into the binary, the Go version
// it was built with, and the version of the API it speaks. `confetti
// version` prints it, every server role logs it when it starts, and
// Register exports it as the confetti_build_info gauge:
//
//	info := buildinfo.Get()
//	lg.Info("starting", info.Fields()...)
//	buildinfo.Register(reg)
package buildinfo
