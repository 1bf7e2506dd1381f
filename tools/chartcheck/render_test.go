package chartcheck

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test, from this package's directory.
var chartDir = filepath.Join("..", "..", "deploy", "helm", "confetti")

const (
	releaseName = "conf"
	namespace   = "confetti"
	// kubeVersion is the cluster version the chart is rendered for: the
	// oldest the chart supports (grpc probes are GA from 1.27).
	kubeVersion = "v1.27.0"
)

// object is one rendered manifest, decoded into its API type.
type object struct {
	// source names the template it came from.
	source string
	kind   string
	name   string
	obj    any
	hook   bool
}

// rendered is every object of one render, by kind.
type rendered struct {
	objects []object
}

func (r *rendered) all(kind string) []object {
	var out []object
	for _, o := range r.objects {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// workload is a Deployment's, StatefulSet's or Job's pod template with
// the replicas it runs.
type workload struct {
	kind, name string
	replicas   int32
	template   corev1.PodTemplateSpec
}

func (r *rendered) workloads() []workload {
	var out []workload
	for _, o := range r.objects {
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{kind: o.kind, name: o.name, replicas: deref(w.Spec.Replicas, 1), template: w.Spec.Template})
		case *appsv1.StatefulSet:
			out = append(out, workload{kind: o.kind, name: o.name, replicas: deref(w.Spec.Replicas, 1), template: w.Spec.Template})
		case *batchv1.Job:
			out = append(out, workload{kind: o.kind, name: o.name, replicas: 1, template: w.Spec.Template})
		}
	}
	return out
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// loadChart loads the chart from disk.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart %s: %v", chartDir, err)
	}
	return ch
}

// values parses a YAML document of values.
func values(t *testing.T, doc string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("values: %v\n%s", err, doc)
	}
	return v
}

// render renders the chart the way `helm install --dry-run=client` does:
// Helm's install action with no cluster (lookup finds nothing, so every
// generated secret is new).
func render(ch *chart.Chart, vals map[string]any) (*release.Release, error) {
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.Replace = true
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	install.KubeVersion = kv
	rel, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("install returned %T, not a v1 release", rel)
	}
	return r, nil
}

// decodeAll renders and decodes every manifest and hook strictly: a field
// its API type does not have fails the test.
func decodeAll(t *testing.T, ch *chart.Chart, vals map[string]any) *rendered {
	t.Helper()
	rel, err := render(ch, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	out := &rendered{}
	add := func(source, doc string, hook bool) {
		if strings.TrimSpace(doc) == "" {
			return
		}
		o, err := decode(doc)
		if err != nil {
			t.Errorf("%s: %v\n%s", source, err, doc)
			return
		}
		o.source, o.hook = source, hook
		out.objects = append(out.objects, o)
	}
	manifests := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(manifests))
	for k := range manifests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		doc := manifests[k]
		add(sourceOf(doc), doc, false)
	}
	for _, h := range rel.Hooks {
		add(h.Path, h.Manifest, true)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// sourceOf is the "# Source: path" line Helm writes above each manifest.
func sourceOf(doc string) string {
	for _, line := range strings.Split(doc, "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			return s
		}
	}
	return "?"
}

// newObject returns an empty object of the API type of apiVersion and kind.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "batch/v1/Job":
		return &batchv1.Job{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	case "monitoring.coreos.com/v1/PodMonitor":
		return &monitoringv1.PodMonitor{}, nil
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}, nil
	}
	return nil, fmt.Errorf("%s %s: no API type known to the test; add it to newObject", apiVersion, kind)
}

// decode decodes one YAML manifest strictly into its API type.
func decode(doc string) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
		return object{}, err
	}
	obj, err := newObject(tm.APIVersion, tm.Kind)
	if err != nil {
		return object{}, err
	}
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		return object{}, fmt.Errorf("%s: strict decode: %w", tm.Kind, err)
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return object{}, fmt.Errorf("%s has no object metadata", tm.Kind)
	}
	if m.GetName() == "" {
		return object{}, fmt.Errorf("%s without a name", tm.Kind)
	}
	return object{kind: tm.Kind, name: m.GetName(), obj: obj}, nil
}

// selects reports whether every label of selector is in labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
