package conformance

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	infv1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// newObject returns the typed object for a manifest's apiVersion and kind.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "rbac.authorization.k8s.io/v1 Role":
		return &rbacv1.Role{}, nil
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		return &rbacv1.RoleBinding{}, nil
	case "inference.networking.k8s.io/v1 InferencePool":
		return &infv1.InferencePool{}, nil
	case "gateway.networking.k8s.io/v1 HTTPRoute":
		return &gwv1.HTTPRoute{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	}
	return nil, fmt.Errorf("no Go type known for %s %s", apiVersion, kind)
}

// loadManifests decodes every document of deploy/kubernetes/*.yaml strictly (an unknown or misspelt field is an
// error) into its typed object.
func loadManifests(t *testing.T) map[string]any {
	t.Helper()
	files, _ := filepath.Glob("../kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/kubernetes")
	}
	objs := map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s document %d: %v", f, i+1, err)
			}
			obj, err := newObject(head.APIVersion, head.Kind)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i+1, err)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s %s/%s: %v", filepath.Base(f), head.Kind, head.Metadata.Name, err)
			}
			objs[head.Kind+"/"+head.Metadata.Name] = obj
		}
	}
	return objs
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// TestManifests: the manifests decode strictly, and the pieces agree with each other and with lorakit: probes on
// /health, a grace period longer than lorakit's 60 s drain, the pool selecting the Deployment's pods on the port
// lorakit listens on, the route pointing at the pool, the EPP Service the pool names, the scrape on /metrics.
func TestManifests(t *testing.T) {
	objs := loadManifests(t)
	get := func(key string) any {
		o, ok := objs[key]
		if !ok {
			t.Fatalf("no %s in deploy/kubernetes", key)
		}
		return o
	}
	dep := get("Deployment/lorakit").(*appsv1.Deployment)
	pod := dep.Spec.Template
	c := pod.Spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/health" {
		t.Errorf("readiness probe is not GET /health: %+v", c.ReadinessProbe)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < 65 {
		t.Errorf("terminationGracePeriodSeconds %v: lorakit drains for up to 60 s after SIGTERM", g)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Errorf("no preStop sleep before the drain")
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"serve", "--port=8000", "--adapter-dir=s3://", "--adapter-cache=", "--adapter-cache-size="} {
		if !strings.Contains(args, want) {
			t.Errorf("lorakit args %q lack %q", args, want)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8000 {
		t.Errorf("container ports %+v", c.Ports)
	}
	if pod.Annotations["prometheus.io/path"] != "/metrics" || pod.Annotations["prometheus.io/port"] != "8000" {
		t.Errorf("scrape annotations %v", pod.Annotations)
	}
	if dep.Spec.Selector == nil || !subset(dep.Spec.Selector.MatchLabels, pod.Labels) {
		t.Errorf("Deployment selector %v does not select its pods %v", dep.Spec.Selector, pod.Labels)
	}

	pool := get("InferencePool/lorakit").(*infv1.InferencePool)
	sel := map[string]string{}
	for k, v := range pool.Spec.Selector.MatchLabels {
		sel[string(k)] = string(v)
	}
	if len(sel) == 0 || !subset(sel, pod.Labels) {
		t.Errorf("InferencePool selector %v does not select the lorakit pods %v", sel, pod.Labels)
	}
	if len(pool.Spec.TargetPorts) != 1 || int32(pool.Spec.TargetPorts[0].Number) != c.Ports[0].ContainerPort {
		t.Errorf("InferencePool targetPorts %+v, lorakit listens on %d", pool.Spec.TargetPorts, c.Ports[0].ContainerPort)
	}
	eppSvc := get("Service/" + string(pool.Spec.EndpointPickerRef.Name)).(*corev1.Service)
	if p := pool.Spec.EndpointPickerRef.Port; p == nil || !hasPort(eppSvc, int32(p.Number)) {
		t.Errorf("the pool's endpointPickerRef port is not on Service %s", eppSvc.Name)
	}
	epp := get("Deployment/lorakit-epp").(*appsv1.Deployment)
	if !subset(eppSvc.Spec.Selector, epp.Spec.Template.Labels) {
		t.Errorf("EPP Service does not select the EPP pods")
	}
	eargs := strings.Join(epp.Spec.Template.Spec.Containers[0].Args, " ")
	if !strings.Contains(eargs, "--pool-name="+pool.Name) || !strings.Contains(eargs, "--pool-namespace="+pool.Namespace) {
		t.Errorf("EPP args %q do not name the pool", eargs)
	}
	cm := get("ConfigMap/lorakit-epp").(*corev1.ConfigMap)
	if !strings.Contains(cm.Data["plugins.yaml"], "lora-affinity-scorer") {
		t.Errorf("the EPP config does not score LoRA affinity")
	}
	route := get("HTTPRoute/lorakit").(*gwv1.HTTPRoute)
	br := route.Spec.Rules[0].BackendRefs[0]
	if br.Kind == nil || *br.Kind != "InferencePool" || string(br.Name) != pool.Name {
		t.Errorf("HTTPRoute backend %+v is not the InferencePool", br.BackendObjectReference)
	}
	svc := get("Service/lorakit").(*corev1.Service)
	sm := get("ServiceMonitor/lorakit").(*monitoringv1.ServiceMonitor)
	if !subset(sm.Spec.Selector.MatchLabels, svc.Labels) || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor does not scrape the lorakit Service's /metrics")
	}
	get("PodDisruptionBudget/lorakit")
	get("RoleBinding/lorakit-epp")
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

func hasPort(s *corev1.Service, port int32) bool {
	for _, p := range s.Spec.Ports {
		if p.Port == port {
			return true
		}
	}
	return false
}
