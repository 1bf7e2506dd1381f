// Package router is Confetti's reference HTTP gateway: an http.Handler
// whose routes and upstreams come from a tenant's config through the
// gateway SDK, in the APISIX shape (the keys /routes/<id> and
// /upstreams/<id>), with upstream nodes taken from the instances
// registered for a service (`confetti svc register <service> ...`).
//
// Every change of the subscription rebuilds the route table, which is
// swapped in atomically: a request keeps the table it started with, so a
// change never drops one in flight. Nodes are picked by smooth weighted
// round-robin; a node that refuses connections or times out is marked down
// for a while (passive health), and a request whose connection failed is
// retried on another node. Bad route or upstream JSON is logged and
// skipped, never fatal; with Validate as the SDK's validator it is also
// refused, so the previous value keeps serving.
//
//	c, _ := gateway.New(gateway.Config{..., Prefixes: router.Prefixes, Services: router.Services, Validate: router.Validate})
//	rt, _ := router.New(c, router.Config{Logger: lg})
//	c.Start(ctx)
//	http.ListenAndServe(":9080", rt)
//
// /__confetti/status (StatusPath) shows the subscription's token and
// endpoint and the route table with every node's health.
package router
