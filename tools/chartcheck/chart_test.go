package chartcheck

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// valueSets are the value combinations that must render and pass every
// check: the defaults (etcd of the chart), external etcd, and everything
// the chart can turn on.
var valueSets = []struct {
	name string
	doc  string
	// secrets are the Secrets the values name and the user creates.
	secrets []string
}{
	{name: "chart etcd (defaults)"},
	{
		name: "external etcd",
		doc: `
etcd:
  enabled: false
externalEtcd:
  meta:
    endpoints: [https://meta-0.example:2379, https://meta-1.example:2379, https://meta-2.example:2379]
  shards:
    - id: east
      endpoints: [https://east-0.example:2379, https://east-1.example:2379, https://east-2.example:2379]
    - id: west
      endpoints: [https://west-0.example:2379]
  caSecret: etcd-ca
etcdAuth:
  existingSecret: etcd-passwords
operatorKey:
  existingSecret: confetti-operator
metrics:
  serviceMonitor:
    enabled: true
  prometheusRule:
    enabled: true
`,
		secrets: []string{"etcd-ca", "etcd-passwords", "confetti-operator"},
	},
	{
		name: "everything on",
		doc: `
proxy:
  replicaCount: 3
  pdb:
    minAvailable: 2
  config:
    tenant-rps: 500
cache:
  replicaCount: 3
gateway:
  enabled: true
  replicaCount: 2
  tenant: demo
  apiKey:
    existingSecret: demo-reader
  labels:
    zone: a
    tier: edge
  pdb:
    create: true
etcd:
  replicaCount: 5
  shards: [one]
  persistence:
    enabled: false
  podAntiAffinity: soft
metrics:
  serviceMonitor:
    enabled: true
  podMonitor:
    enabled: true
  prometheusRule:
    enabled: true
networkPolicy:
  allowExternal: false
  metricsFrom:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: monitoring
commonLabels:
  team: platform
commonAnnotations:
  owner: platform
`,
		secrets: []string{"demo-reader"},
	},
}

// invalidSets are value combinations that cannot work: each must fail to
// render with a message naming the problem.
var invalidSets = []struct {
	name string
	doc  string
	want string
}{
	{
		name: "external etcd without endpoints",
		doc:  "etcd: {enabled: false}\netcdAuth: {existingSecret: pw}\nexternalEtcd: {shards: [{id: a, endpoints: [http://a:2379]}]}",
		want: "externalEtcd.meta.endpoints is empty",
	},
	{
		name: "external etcd without shards",
		doc:  "etcd: {enabled: false}\netcdAuth: {existingSecret: pw}\nexternalEtcd: {meta: {endpoints: [http://m:2379]}}",
		want: "externalEtcd.shards is empty",
	},
	{
		name: "external shard without endpoints",
		doc:  "etcd: {enabled: false}\netcdAuth: {existingSecret: pw}\nexternalEtcd: {meta: {endpoints: [http://m:2379]}, shards: [{id: a}]}",
		want: "externalEtcd.shards[0] (a) has no endpoints",
	},
	{
		name: "external etcd without passwords",
		doc:  "etcd: {enabled: false}\nexternalEtcd: {meta: {endpoints: [http://m:2379]}, shards: [{id: a, endpoints: [http://a:2379]}]}",
		want: "etcdAuth.existingSecret is empty",
	},
	{
		name: "chart etcd without shards",
		doc:  "etcd: {shards: []}",
		want: "etcd.shards is empty",
	},
	{
		name: "one etcd member with a PDB",
		doc:  "etcd: {replicaCount: 1}",
		want: "etcd.replicaCount is 1 and etcd.pdb.create is true",
	},
	{
		name: "two etcd members with a PDB",
		doc:  "etcd: {replicaCount: 2}",
		want: "etcd.replicaCount is 2 and etcd.pdb.create is true",
	},
	{
		name: "shard named meta",
		doc:  "etcd: {shards: [meta]}",
		want: `"meta" names the meta cluster`,
	},
	{
		name: "shard id that is no name",
		doc:  "etcd: {shards: [Shard_A]}",
		want: `"Shard_A" is not a shard id`,
	},
	{
		name: "shard listed twice",
		doc:  "etcd: {shards: [a, a]}",
		want: "a shard id is listed twice",
	},
	{
		name: "proxy PDB as large as its replicas",
		doc:  "proxy: {replicaCount: 1}",
		want: "proxy.pdb.minAvailable (1) must be below proxy.replicaCount (1)",
	},
	{
		name: "cache PDB above its replicas",
		doc:  "cache: {replicaCount: 2, pdb: {minAvailable: 3}}",
		want: "cache.pdb.minAvailable (3) must be below cache.replicaCount (2)",
	},
	{
		name: "gateway without a tenant",
		doc:  "gateway: {enabled: true, apiKey: {existingSecret: k}}",
		want: "gateway.tenant is empty",
	},
	{
		name: "gateway without a key",
		doc:  "gateway: {enabled: true, tenant: demo}",
		want: "gateway.apiKey.existingSecret is empty",
	},
	{
		name: "ES256 tokens without a key",
		doc:  "etcd: {authToken: {signMethod: ES256}}",
		want: "the chart generates RSA keys only",
	},
}

func TestChartRendersValidValueSets(t *testing.T) {
	ch := loadChart(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			r := decodeAll(t, ch, values(t, vs.doc))
			checkContainers(t, r)
			checkServices(t, r)
			checkDisruptionBudgets(t, r)
			checkReferences(t, r, vs.secrets)
			checkNetworkPaths(t, r, values(t, vs.doc))
			checkInitJob(t, r)
			checkRoleConfig(t, r)
			checkMonitoring(t, r)
		})
	}
}

func TestChartRefusesValuesThatCannotWork(t *testing.T) {
	ch := loadChart(t)
	for _, tc := range invalidSets {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(ch, values(t, tc.doc))
			if err == nil {
				t.Fatalf("values rendered, want a failure naming %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not name %q", err, tc.want)
			}
		})
	}
}

func TestChartLints(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = namespace
			kv, err := common.ParseKubeVersion(kubeVersion)
			if err != nil {
				t.Fatal(err)
			}
			lint.KubeVersion = kv
			res := lint.Run([]string{chartDir}, values(t, vs.doc))
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
			if res.TotalChartsLinted != 1 || len(res.Errors) > 0 {
				t.Fatalf("helm lint --strict: %d charts linted, errors: %v", res.TotalChartsLinted, res.Errors)
			}
		})
	}
}

// The chart's PrometheusRule renders the same rules as
// deploy/prometheus/rules.yaml, which promtool tests.
func TestChartRulesMatchDeployRules(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(chartDir, "files", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from deploy/prometheus/rules.yaml: copy it (cp deploy/prometheus/rules.yaml %s)", filepath.Join(chartDir, "files", "rules.yaml"), filepath.Join("deploy", "helm", "confetti", "files", "rules.yaml"))
	}
	var file monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(want, &file); err != nil {
		t.Fatalf("rules.yaml as a PrometheusRule spec: %v", err)
	}
	r := decodeAll(t, loadChart(t), values(t, "metrics: {prometheusRule: {enabled: true}}"))
	rules := r.all("PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules rendered, want 1", len(rules))
	}
	gotSpec := rules[0].obj.(*monitoringv1.PrometheusRule).Spec
	a, _ := yaml.Marshal(gotSpec)
	b, _ := yaml.Marshal(file)
	if !bytes.Equal(a, b) {
		t.Fatalf("rendered PrometheusRule spec differs from rules.yaml:\n%s\nwant:\n%s", a, b)
	}
	var alerts []string
	for _, g := range gotSpec.Groups {
		for _, rule := range g.Rules {
			alerts = append(alerts, rule.Alert)
		}
	}
	for _, want := range []string{"ConfettiCacheShardNotSynced", "ConfettiCacheShardLagging", "ConfettiProxyShardErrors", "EtcdClusterNoLeader", "ConfettiStagedRolloutPaused", "ConfettiSubscriberResetsRising"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s missing from the rules (have %v)", want, alerts)
		}
	}
}

// checkContainers: every container has resources and a non-root, read-only,
// capability-free security context; every long-running container has
// liveness and readiness probes aimed at ports it declares. The init Job
// runs to completion, so it has no probes: its activeDeadlineSeconds bounds it.
func checkContainers(t *testing.T, r *rendered) {
	t.Helper()
	for _, w := range r.workloads() {
		spec := w.template.Spec
		if len(spec.Containers) == 0 {
			t.Errorf("%s %s has no containers", w.kind, w.name)
		}
		if w.kind == "Job" {
			if spec.RestartPolicy != corev1.RestartPolicyOnFailure && spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("Job %s: restartPolicy %q", w.name, spec.RestartPolicy)
			}
		}
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			where := fmt.Sprintf("%s %s container %s", w.kind, w.name, c.Name)
			if w.kind != "Job" {
				if c.LivenessProbe == nil || c.ReadinessProbe == nil {
					t.Errorf("%s: liveness %v, readiness %v: want both probes", where, c.LivenessProbe != nil, c.ReadinessProbe != nil)
				} else {
					checkProbePort(t, where+" liveness", c, c.LivenessProbe)
					checkProbePort(t, where+" readiness", c, c.ReadinessProbe)
				}
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: resources %v: want cpu and memory requests and a memory limit", where, c.Resources)
			}
			checkSecurity(t, where, spec.SecurityContext, c.SecurityContext)
			if c.Image == "" || strings.HasSuffix(c.Image, ":") {
				t.Errorf("%s: image %q", where, c.Image)
			}
		}
	}
}

func checkProbePort(t *testing.T, where string, c corev1.Container, p *corev1.Probe) {
	t.Helper()
	var port intstr.IntOrString
	switch {
	case p.GRPC != nil:
		port = intstr.FromInt32(p.GRPC.Port)
	case p.HTTPGet != nil:
		port = p.HTTPGet.Port
	case p.TCPSocket != nil:
		port = p.TCPSocket.Port
	default:
		t.Errorf("%s: no grpc, httpGet or tcpSocket handler", where)
		return
	}
	if !hasPort(c, port) {
		t.Errorf("%s: port %s is not a port of the container", where, port.String())
	}
}

func hasPort(c corev1.Container, port intstr.IntOrString) bool {
	for _, p := range c.Ports {
		if port.Type == intstr.String && p.Name == port.StrVal || port.Type == intstr.Int && p.ContainerPort == port.IntVal {
			return true
		}
	}
	return false
}

func checkSecurity(t *testing.T, where string, pod *corev1.PodSecurityContext, c *corev1.SecurityContext) {
	t.Helper()
	if c == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	nonRoot := c.RunAsNonRoot != nil && *c.RunAsNonRoot || c.RunAsNonRoot == nil && pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
	uid := c.RunAsUser
	if uid == nil && pod != nil {
		uid = pod.RunAsUser
	}
	if !nonRoot || uid == nil || *uid == 0 {
		t.Errorf("%s: runAsNonRoot %v, runAsUser %v: want a non-root user id", where, nonRoot, uid)
	}
	if c.ReadOnlyRootFilesystem == nil || !*c.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", where)
	}
	if c.AllowPrivilegeEscalation == nil || *c.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if c.Privileged != nil && *c.Privileged {
		t.Errorf("%s: privileged", where)
	}
	if c.Capabilities == nil || !slices.Contains(c.Capabilities.Drop, "ALL") || len(c.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %v: want drop ALL and nothing added", where, c.Capabilities)
	}
	seccomp := c.SeccompProfile
	if seccomp == nil && pod != nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccomp profile %v: want RuntimeDefault", where, seccomp)
	}
}

// checkServices: every Service selects the pods of some workload, and its
// target ports are ports of that pod's containers.
func checkServices(t *testing.T, r *rendered) {
	t.Helper()
	for _, o := range r.all("Service") {
		svc := o.obj.(*corev1.Service)
		var matched []workload
		for _, w := range r.workloads() {
			if w.kind != "Job" && selects(svc.Spec.Selector, w.template.Labels) {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			t.Errorf("Service %s selects %v: no Deployment or StatefulSet pods carry these labels", o.name, svc.Spec.Selector)
			continue
		}
		for _, sp := range svc.Spec.Ports {
			for _, w := range matched {
				found := false
				for _, c := range w.template.Spec.Containers {
					found = found || hasPort(c, sp.TargetPort)
				}
				if !found {
					t.Errorf("Service %s port %s: target port %s is not a port of %s %s", o.name, sp.Name, sp.TargetPort.String(), w.kind, w.name)
				}
			}
		}
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			for _, w := range matched {
				if w.kind == "StatefulSet" && !r.statefulSetUses(w.name, o.name) {
					t.Errorf("headless Service %s is not the serviceName of StatefulSet %s", o.name, w.name)
				}
			}
		}
	}
}

func (r *rendered) statefulSetUses(sts, svc string) bool {
	for _, o := range r.all("StatefulSet") {
		if o.name == sts {
			return o.obj.(*appsv1.StatefulSet).Spec.ServiceName == svc
		}
	}
	return false
}

// checkDisruptionBudgets: every PDB selects exactly one workload and keeps
// fewer pods than it runs (else no pod could ever be evicted); an etcd
// cluster's PDB keeps exactly its quorum.
func checkDisruptionBudgets(t *testing.T, r *rendered) {
	t.Helper()
	for _, o := range r.all("PodDisruptionBudget") {
		pdb := o.obj.(*policyv1.PodDisruptionBudget)
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.Type != intstr.Int {
			t.Errorf("PDB %s: minAvailable %v: want a number", o.name, pdb.Spec.MinAvailable)
			continue
		}
		if pdb.Spec.Selector == nil {
			t.Errorf("PDB %s has no selector", o.name)
			continue
		}
		var matched []workload
		for _, w := range r.workloads() {
			if w.kind != "Job" && selects(pdb.Spec.Selector.MatchLabels, w.template.Labels) {
				matched = append(matched, w)
			}
		}
		if len(matched) != 1 {
			t.Errorf("PDB %s selects %d workloads, want 1", o.name, len(matched))
			continue
		}
		w, minAvail := matched[0], pdb.Spec.MinAvailable.IntVal
		if minAvail >= w.replicas || minAvail < 1 {
			t.Errorf("PDB %s: minAvailable %d with %d replicas of %s %s: want 1 <= minAvailable < replicas", o.name, minAvail, w.replicas, w.kind, w.name)
		}
		if w.kind == "StatefulSet" {
			if quorum := w.replicas/2 + 1; minAvail != quorum {
				t.Errorf("PDB %s: minAvailable %d, want the quorum %d of %d etcd members", o.name, minAvail, quorum, w.replicas)
			}
		}
	}
	// Proxies, cache nodes and every etcd cluster have one.
	for _, w := range r.workloads() {
		if w.kind == "Job" || w.template.Labels["app.kubernetes.io/component"] == "gateway" {
			continue
		}
		covered := false
		for _, o := range r.all("PodDisruptionBudget") {
			covered = covered || selects(o.obj.(*policyv1.PodDisruptionBudget).Spec.Selector.MatchLabels, w.template.Labels)
		}
		if !covered {
			t.Errorf("%s %s has no PodDisruptionBudget", w.kind, w.name)
		}
	}
}

// checkReferences: every ConfigMap and Secret a pod uses is rendered by the
// chart or named in the values; every volume mount names a volume; every
// StatefulSet with anti-affinity spreads its own pods.
func checkReferences(t *testing.T, r *rendered, external []string) {
	t.Helper()
	have := map[string]map[string]bool{"ConfigMap": {}, "Secret": {}}
	for _, kind := range []string{"ConfigMap", "Secret"} {
		for _, o := range r.all(kind) {
			have[kind][o.name] = true
		}
	}
	for _, name := range external {
		have["Secret"][name] = true
	}
	for _, w := range r.workloads() {
		spec := w.template.Spec
		volumes := map[string]bool{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = true
			if v.Secret != nil && !have["Secret"][v.Secret.SecretName] {
				t.Errorf("%s %s volume %s: Secret %s is neither rendered nor named in the values", w.kind, w.name, v.Name, v.Secret.SecretName)
			}
			if v.ConfigMap != nil && !have["ConfigMap"][v.ConfigMap.Name] {
				t.Errorf("%s %s volume %s: ConfigMap %s is not rendered", w.kind, w.name, v.Name, v.ConfigMap.Name)
			}
		}
		if w.kind == "StatefulSet" {
			for _, c := range r.all("StatefulSet") {
				if c.name != w.name {
					continue
				}
				for _, pvc := range c.obj.(*appsv1.StatefulSet).Spec.VolumeClaimTemplates {
					volumes[pvc.Name] = true
				}
			}
			checkAntiAffinity(t, w)
		}
		for _, c := range spec.Containers {
			for _, m := range c.VolumeMounts {
				if !volumes[m.Name] {
					t.Errorf("%s %s container %s mounts %s, which is not a volume of the pod", w.kind, w.name, c.Name, m.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !have["Secret"][e.ValueFrom.SecretKeyRef.Name] {
					t.Errorf("%s %s env %s: Secret %s is neither rendered nor named in the values", w.kind, w.name, e.Name, e.ValueFrom.SecretKeyRef.Name)
				}
			}
		}
	}
}

func checkAntiAffinity(t *testing.T, w workload) {
	t.Helper()
	aff := w.template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil {
		t.Errorf("StatefulSet %s: no pod anti-affinity", w.name)
		return
	}
	terms := slices.Clone(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
	for _, p := range aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, p.PodAffinityTerm)
	}
	for _, term := range terms {
		if term.TopologyKey == "kubernetes.io/hostname" && term.LabelSelector != nil && selects(term.LabelSelector.MatchLabels, w.template.Labels) {
			return
		}
	}
	t.Errorf("StatefulSet %s: no anti-affinity term that spreads its own pods over hosts", w.name)
}

// checkNetworkPaths evaluates the NetworkPolicies (ingress, pod selectors
// of this namespace) between the chart's pods: the data paths of the
// compose networks are open (writers -> proxies -> etcd, caches -> etcd,
// gateways -> caches, the init job -> etcd) and the others are closed
// (gateways never reach etcd; clients only with allowExternal or the
// client label).
func checkNetworkPaths(t *testing.T, r *rendered, vals map[string]any) {
	t.Helper()
	policies := r.all("NetworkPolicy")
	if len(policies) == 0 {
		t.Fatal("no NetworkPolicy rendered")
	}
	pods := map[string][]workload{}
	for _, w := range r.workloads() {
		c := w.template.Labels["app.kubernetes.io/component"]
		pods[c] = append(pods[c], w)
	}
	for _, o := range policies {
		np := o.obj.(*networkingv1.NetworkPolicy)
		found := false
		for _, w := range r.workloads() {
			found = found || selects(np.Spec.PodSelector.MatchLabels, w.template.Labels)
		}
		if !found {
			t.Errorf("NetworkPolicy %s selects no pods of the chart", o.name)
		}
	}
	np, _ := vals["networkPolicy"].(map[string]any)
	allowExternal := np["allowExternal"] != false
	metricsFrom, _ := np["metricsFrom"].([]any)
	metricsOpen := len(metricsFrom) == 0
	stranger := map[string]string{"app": "somebody-else"}
	port := func(w workload, name string) int32 {
		for _, c := range w.template.Spec.Containers {
			for _, p := range c.Ports {
				if p.Name == name {
					return p.ContainerPort
				}
			}
		}
		t.Fatalf("%s %s has no port %s", w.kind, w.name, name)
		return 0
	}
	type path struct {
		from   map[string]string
		fromID string
		to     string
		port   string
		open   bool
	}
	var paths []path
	label := func(c string) map[string]string {
		if ws := pods[c]; len(ws) > 0 {
			return ws[0].template.Labels
		}
		return nil
	}
	for _, src := range []string{"proxy", "cache", "init"} {
		if l := label(src); l != nil {
			paths = append(paths, path{from: l, fromID: src, to: "etcd", port: "client", open: true})
		}
	}
	if l := label("gateway"); l != nil {
		paths = append(paths,
			path{from: l, fromID: "gateway", to: "etcd", port: "client", open: false},
			path{from: l, fromID: "gateway", to: "cache", port: "grpc", open: true})
	}
	paths = append(paths,
		path{from: label("proxy"), fromID: "proxy", to: "cache", port: "grpc", open: true},
		path{from: stranger, fromID: "a stranger", to: "etcd", port: "client", open: false},
		path{from: stranger, fromID: "a stranger", to: "etcd", port: "peer", open: false},
		path{from: stranger, fromID: "a stranger", to: "proxy", port: "grpc", open: allowExternal},
		path{from: stranger, fromID: "a stranger", to: "cache", port: "grpc", open: allowExternal},
		path{from: stranger, fromID: "a stranger", to: "proxy", port: "metrics", open: metricsOpen},
		path{from: stranger, fromID: "a stranger", to: "cache", port: "metrics", open: metricsOpen})
	for _, p := range paths {
		for _, to := range pods[p.to] {
			got := allowed(policies, p.from, to.template.Labels, port(to, p.port))
			if got != p.open {
				t.Errorf("%s -> %s %s port %s: open %v, want %v", p.fromID, to.kind, to.name, p.port, got, p.open)
			}
		}
	}
	// Members of one etcd cluster reach each other's peer port, not
	// another cluster's.
	for _, a := range pods["etcd"] {
		for _, b := range pods["etcd"] {
			same := a.name == b.name
			if got := allowed(policies, a.template.Labels, b.template.Labels, port(b, "peer")); got != same {
				t.Errorf("etcd %s -> %s peer port: open %v, want %v", a.name, b.name, got, same)
			}
		}
	}
}

// allowed reports whether ingress from a pod with labels from to a pod
// with labels to on port is allowed: no policy selects the target, or a
// rule of one that does admits the port and the source (namespace
// selectors are taken as other namespaces and never match).
func allowed(policies []object, from, to map[string]string, port int32) bool {
	selected := false
	for _, o := range policies {
		np := o.obj.(*networkingv1.NetworkPolicy)
		if !selects(np.Spec.PodSelector.MatchLabels, to) {
			continue
		}
		selected = true
		for _, rule := range np.Spec.Ingress {
			portOK := len(rule.Ports) == 0
			for _, p := range rule.Ports {
				portOK = portOK || p.Port != nil && p.Port.IntVal == port
			}
			if !portOK {
				continue
			}
			if len(rule.From) == 0 {
				return true
			}
			for _, peer := range rule.From {
				if peer.NamespaceSelector == nil && peer.IPBlock == nil && peer.PodSelector != nil && selects(peer.PodSelector.MatchLabels, from) {
					return true
				}
			}
		}
	}
	return !selected
}

// checkInitJob: the init job is a post-install and post-upgrade hook that
// names meta and every shard.
func checkInitJob(t *testing.T, r *rendered) {
	t.Helper()
	jobs := r.all("Job")
	if len(jobs) != 1 {
		t.Fatalf("%d Jobs rendered, want the init job", len(jobs))
	}
	job := jobs[0].obj.(*batchv1.Job)
	if !jobs[0].hook || job.Annotations["helm.sh/hook"] != "post-install,post-upgrade" {
		t.Errorf("Job %s: hook %v, annotation %q: want a post-install,post-upgrade hook", job.Name, jobs[0].hook, job.Annotations["helm.sh/hook"])
	}
	args := job.Spec.Template.Spec.Containers[0].Args
	if len(args) == 0 || args[0] != "init" {
		t.Fatalf("Job %s args %v: want confetti init", job.Name, args)
	}
	var shards, meta int
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--shard="); ok {
			id, urls, _ := strings.Cut(v, "=")
			if id == "" || urls == "" {
				t.Errorf("init %s: want --shard=ID=URL[,URL...]", a)
			}
			shards++
		}
		if strings.HasPrefix(a, "--meta-endpoints=http") {
			meta++
		}
	}
	if shards == 0 || meta != 1 {
		t.Errorf("init args %v: %d --shard and %d --meta-endpoints", args, shards, meta)
	}
	// As many shards as the chart's etcd StatefulSets (less meta), when
	// the chart runs etcd.
	if sts := len(r.all("StatefulSet")); sts > 0 && sts-1 != shards {
		t.Errorf("init names %d shards, the chart runs %d shard clusters", shards, sts-1)
	}
}

// flagRE finds the flag names in a command's --help.
var flagRE = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)

// roleFlags returns the flags of `confetti <role>` from its --help, or
// false when the binary has no such command.
func roleFlags(t *testing.T, bin, role string) (map[string]bool, bool) {
	t.Helper()
	out, err := exec.Command(bin, role, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Usage:\n  confetti "+role) {
		return nil, false
	}
	flags := map[string]bool{}
	for _, m := range flagRE.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	return flags, true
}

// checkRoleConfig: every key of a role's config file, every flag in a
// confetti container's arguments and every CONFETTI_* variable it sets is
// a flag of that command, as `confetti <command> --help` lists them. The
// binary comes from CONFETTI_BIN (make chart-test builds it); a command
// the binary does not have yet (init, built in parallel) is skipped.
func checkRoleConfig(t *testing.T, r *rendered) {
	t.Helper()
	bin := os.Getenv("CONFETTI_BIN")
	if bin == "" {
		t.Log("CONFETTI_BIN is not set: the config keys are not checked against the roles' flags (make chart-test sets it)")
		return
	}
	for _, o := range r.all("ConfigMap") {
		cm := o.obj.(*corev1.ConfigMap)
		for file, content := range cm.Data {
			role := strings.TrimSuffix(file, ".yaml")
			flags, ok := roleFlags(t, bin, role)
			if !ok {
				t.Fatalf("ConfigMap %s %s: %s has no command %q", o.name, file, bin, role)
			}
			var cfg map[string]any
			if err := yaml.UnmarshalStrict([]byte(content), &cfg); err != nil {
				t.Fatalf("ConfigMap %s %s: %v", o.name, file, err)
			}
			for k := range cfg {
				if !flags[k] || k == "config-file" {
					t.Errorf("ConfigMap %s %s: key %q is not a flag of confetti %s", o.name, file, k, role)
				}
			}
		}
	}
	for _, w := range r.workloads() {
		for _, c := range w.template.Spec.Containers {
			if !strings.Contains(c.Image, "confetti/confetti") || len(c.Args) == 0 {
				continue
			}
			role := c.Args[0]
			flags, ok := roleFlags(t, bin, role)
			if !ok {
				if w.kind != "Job" {
					t.Errorf("%s %s: %s has no command %q", w.kind, w.name, bin, role)
				} else {
					t.Logf("%s %s: %s has no command %q yet: its arguments are not checked", w.kind, w.name, bin, role)
				}
				continue
			}
			for _, a := range c.Args[1:] {
				name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !strings.HasPrefix(a, "--") || !flags[name] {
					t.Errorf("%s %s: argument %q is not a flag of confetti %s", w.kind, w.name, a, role)
				}
			}
			for _, e := range c.Env {
				v, ok := strings.CutPrefix(e.Name, "CONFETTI_")
				if ok && !flags[strings.ReplaceAll(strings.ToLower(v), "_", "-")] {
					t.Errorf("%s %s: variable %s sets no flag of confetti %s", w.kind, w.name, e.Name, role)
				}
			}
		}
	}
}

// checkMonitoring: monitors select the chart's Services or pods on a port
// named metrics.
func checkMonitoring(t *testing.T, r *rendered) {
	t.Helper()
	for _, o := range r.all("ServiceMonitor") {
		sm := o.obj.(*monitoringv1.ServiceMonitor)
		n := 0
		for _, s := range r.all("Service") {
			svc := s.obj.(*corev1.Service)
			if !selects(sm.Spec.Selector.MatchLabels, svc.Labels) {
				continue
			}
			c := svc.Labels["app.kubernetes.io/component"]
			if c != "proxy" && c != "cache" {
				continue
			}
			n++
			if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "metrics" }) {
				t.Errorf("ServiceMonitor %s: Service %s has no port named metrics", o.name, s.name)
			}
		}
		if n != 2 {
			t.Errorf("ServiceMonitor %s selects %d Services of proxies and caches, want 2", o.name, n)
		}
	}
	for _, o := range r.all("PodMonitor") {
		pm := o.obj.(*monitoringv1.PodMonitor)
		n := 0
		for _, w := range r.workloads() {
			if selects(pm.Spec.Selector.MatchLabels, w.template.Labels) {
				n++
			}
		}
		if n != len(r.all("StatefulSet")) {
			t.Errorf("PodMonitor %s selects %d workloads, want the %d etcd StatefulSets", o.name, n, len(r.all("StatefulSet")))
		}
	}
}
