// Package serve runs one Confetti role (shard proxy, cache node) behind
// the two network faces every role has: a gRPC server for the API, with
// grpc.health.v1 and reflection, and a separate HTTP server for operators
// with Prometheus /metrics, /healthz, /readyz and, when enabled,
// /debug/pprof/.
//
// A role registers its services on the gRPC server, then starts it:
//
//	srv, err := serve.New(serve.Options{
//		ListenAddr:  ":7700",
//		MetricsAddr: ":7790",
//		Registry:    reg,
//		Ready:       func() error { ... nil once the role can serve ... },
//	})
//	proxy.Register(srv.GRPC())
//	addrs, err := srv.Start()
//	...
//	err = srv.Stop(ctx) // graceful until ctx is done, then hard
//
// A role with an HTTP/JSON gateway over its own gRPC API (the shard
// proxy's) adds it with SetGateway before Start; it is served on its own
// address and stopped before the gRPC server, so that the requests it
// forwards finish first.
//
// Readiness is one function: /readyz answers 200 while it returns nil and
// 503 with its error as the reason otherwise, and the gRPC health status of
// the server and of every registered service follows it.
package serve
