// kstatus prints the status that sigs.k8s.io/cli-utils/pkg/kstatus computes for each object it reads:
// what Flux, `kubectl wait`-style waiters and cli-utils appliers make of an object's status.
//
// Input (stdin): one object, or a List (kubectl get -o json). Output (stdout): one JSON line per object,
// {"kind", "namespace", "name", "status", "message"}, status one of InProgress, Failed, Current,
// Terminating, Unknown.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type line struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(data); err != nil {
		fail(fmt.Errorf("stdin is not a Kubernetes object: %w", err))
	}
	items := []unstructured.Unstructured{obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			fail(err)
		}
		items = list.Items
	}
	out := json.NewEncoder(os.Stdout)
	for i := range items {
		u := &items[i]
		res, err := status.Compute(u)
		if err != nil {
			fail(fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err))
		}
		if err := out.Encode(line{u.GetKind(), u.GetNamespace(), u.GetName(), res.Status.String(), res.Message}); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
