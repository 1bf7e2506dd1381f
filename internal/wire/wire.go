// Package wire holds the names that cache nodes and their clients agree
// on outside the protobuf messages: gRPC metadata of subscription streams.
package wire

// BookmarkIntervalHeader is the gRPC response header of a subscription
// stream (Subscribe, SubscribeMany) that says how often, at most apart,
// the node sends each subscription a message: a Go duration ("2s"). A
// client that hears nothing for a few intervals treats the stream as
// dead.
const BookmarkIntervalHeader = "confetti-bookmark-interval"
