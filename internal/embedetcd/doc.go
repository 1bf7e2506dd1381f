// Package embedetcd starts real etcd clusters inside the current process,
// for tests and for `confetti dev`.
//
// A cluster has one or three members, each a real etcd server from
// go.etcd.io/etcd/server/v3/embed with its own data directory, listening on
// loopback. Ports are chosen by the kernel unless the caller fixes them (dev
// does, so that endpoints stay the same across restarts); fsync is off and
// password hashing (EnableAuth) cheap, since the data of a test or a dev
// run is disposable:
//
//	c, err := embedetcd.Start(ctx, embedetcd.Config{Name: "meta", Members: 1})
//	if err != nil { ... }
//	defer c.Close()
//	cli, err := c.Client()
//
// Tests use NewForTest, which also registers Close with t.Cleanup.
package embedetcd
