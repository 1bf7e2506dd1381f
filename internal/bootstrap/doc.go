// Package bootstrap sets up a Confetti cluster on its etcd clusters in one
// idempotent step: etcd auth on with a root user, Confetti's own etcd role
// and user (readwrite on /confetti/ only) on meta and every shard, the
// shards registered in meta after the check `confetti shard add` makes,
// and the operator API key. `confetti init`, `confetti dev`, the compose
// cluster's init service and the Helm chart's init Job all run it.
//
//	res, err := bootstrap.Init(ctx, bootstrap.Config{
//		MetaEndpoints: meta, Shards: shards,
//		RootPassword: rootPW, Password: confettiPW,
//		OperatorKey: keyFromFile, // empty on the first run: one is made
//	})
//	// res.Changes is empty when there was nothing to do.
//
// It also makes the key pair of etcd's JWT auth tokens (WriteJWTKeys):
// etcd's default simple tokens die with the etcd process that issued
// them, so after an etcd restart every client must authenticate again;
// JWT tokens are checked by signature and stay valid across restarts.
package bootstrap
