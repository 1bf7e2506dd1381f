// Package chartcheck tests the Helm chart in deploy/helm/confetti without a
// cluster: it renders the chart with Helm's Go library in client-only
// dry-run mode, decodes every object strictly into its Kubernetes API type
// and checks the properties a deployment relies on.
package chartcheck
