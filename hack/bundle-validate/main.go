// Command bundle-validate runs the checks of
//
//	operator-sdk bundle validate <dir> --select-optional suite=operatorframework [--optional-values k=v]
//
// on a bundle directory. It exists because operator-sdk cannot be built here (the module proxy
// refuses its go.mod, see docs/toolchain.md), while every validator that command runs lives in
// github.com/operator-framework/api, which builds fine. hack/build-tools.sh builds it against the
// api version operator-sdk v1.42.0 pins; the selection below mirrors that release's
// internal/cmd/operator-sdk/bundle/validate/{validate.go,optional.go} and internal/registry/validate.go.
// Left out, as they need operator-registry (a much larger build): its bundle-format check
// (annotations.yaml against the manifests) and its list of object kinds a registry+v1 bundle may
// hold; `make catalog` runs `opm render` + `opm validate` on the bundle instead.
//
// Usage: bundle-validate <bundle dir> [key=value ...]   e.g. bundle-validate bundle k8s-version=1.34
// Prints one ERROR or WARNING line per finding; exits 1 if there is any (operator-sdk exits 1
// on errors only: warnings fail here too, so that none creeps in unnoticed), 2 on bad usage.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	apierrors "github.com/operator-framework/api/pkg/validation/errors"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
	k8svalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bundle-validate <bundle dir> [key=value ...]")
		os.Exit(2)
	}
	optional := map[string]string{} // operator-sdk's --optional-values, e.g. k8s-version=1.34
	for _, kv := range os.Args[2:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "bundle-validate: %q is not key=value\n", kv)
			os.Exit(2)
		}
		optional[k] = v
	}
	// Our annotations.yaml names manifests/ as the manifests folder (operator-sdk reads the label).
	bundle, err := manifests.GetBundleFromDir(filepath.Join(os.Args[1], "manifests"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR loading bundle %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}

	// The default checks: the bundle as a whole, its CSV, its CRDs, and the metadata of the rest.
	results := validation.BundleValidator.Validate(bundle)
	results = append(results, csvAndCRDs(bundle)...)
	results = append(results, otherObjects(bundle))

	// The optional validators labelled suite=operatorframework, given the objects operator-sdk
	// passes them (ObjectsToValidate plus bundle.Objects again, then the optional values).
	objs := bundle.ObjectsToValidate()
	for _, obj := range bundle.Objects {
		objs = append(objs, obj)
	}
	objs = append(objs, optional)
	for _, v := range (interfaces.Validators{
		validation.OperatorHubV2Validator, validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator, validation.AlphaDeprecatedAPIsValidator,
		validation.GoodPracticesValidator,
	}) {
		results = append(results, v.Validate(objs...)...)
	}

	failed := false
	for _, r := range results {
		for _, e := range append(r.Errors, r.Warnings...) {
			failed = true
			level := map[apierrors.Level]string{apierrors.LevelError: "ERROR"}[e.Level]
			if level == "" {
				level = "WARNING"
			}
			fmt.Printf("%s %s: %s\n", level, r.Name, strings.TrimPrefix(e.Error(), string(e.Level)+": "))
		}
	}
	if failed {
		os.Exit(1)
	}
	fmt.Println("bundle-validate: no error or warning (default validators + suite=operatorframework)")
}

// csvAndCRDs validates the CSV and every CRD (v1 and v1beta1) of the bundle.
func csvAndCRDs(bundle *manifests.Bundle) []apierrors.ManifestResult {
	var found []apierrors.ManifestResult
	if bundle.CSV != nil {
		found = append(found, validation.ClusterServiceVersionValidator.Validate(bundle.CSV)...)
	}
	crds := make([]interface{}, 0, len(bundle.V1CRDs)+len(bundle.V1beta1CRDs))
	for _, crd := range bundle.V1CRDs {
		crds = append(crds, crd)
	}
	for _, crd := range bundle.V1beta1CRDs {
		crds = append(crds, crd)
	}
	if len(crds) > 0 {
		found = append(found, validation.CustomResourceDefinitionValidator.Validate(crds...)...)
	}
	return found
}

// otherObjects reports a bundle without a CSV, and any other object whose metadata the API server
// would refuse (what `kubectl apply` of the bundle's manifests would hit first).
func otherObjects(bundle *manifests.Bundle) apierrors.ManifestResult {
	result := apierrors.ManifestResult{Name: bundle.Name}
	if bundle.CSV == nil {
		result.Add(apierrors.ErrInvalidBundle("no ClusterServiceVersion in bundle", bundle.Name))
	}
	anyName := func(string, bool) []string { return nil }
	for _, obj := range bundle.Objects {
		switch obj.GetKind() {
		case "ClusterServiceVersion", "CustomResourceDefinition":
			continue // validated above
		}
		problems := k8svalidation.ValidateObjectMetaAccessor(obj, false, anyName, field.NewPath("metadata"))
		if len(problems) > 0 {
			result.Add(apierrors.ErrFailedValidation(problems.ToAggregate().Error(), obj.GetName()))
		}
	}
	return result
}
