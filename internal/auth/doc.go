// Package auth checks the API key of every request to a shard proxy or a
// cache node, and decides what the key may do.
//
// A key looks like cft_<id>_<secret>: the id is public and names the key in
// logs and in meta (/confetti/meta/apikeys/<id>); the secret is 256 random
// bits of which meta stores only the SHA-256. An Authenticator verifies a
// key against the meta store's in-memory mirror of the key records, kept
// current by the store's watch, so a request costs no etcd round trip and
// no password hashing, and a revoked key is refused as soon as the watch
// delivers the delete; streams opened with it are ended then too.
//
// Keys have a role. Reader, writer and admin keys act on one tenant;
// operator keys manage shards and tenants and may act on every tenant. A
// table maps every gRPC method of the API to the least role it needs and
// to where the request names its tenant; a method missing from the table
// is refused (health and reflection excepted).
//
// Roles install the interceptors on their gRPC server, so that the services
// themselves stay unaware of keys; handlers find the caller with
// FromContext:
//
//	a, err := auth.New(store, auth.Config{Logger: lg, Registerer: reg})
//	srv := grpc.NewServer(a.ServerOptions()...)
//
// Clients send the key as the x-api-key gRPC metadata (WithAPIKey) or, over
// HTTP, as the X-API-Key header.
package auth
