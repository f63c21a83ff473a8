{{/*
Names, labels and shared fragments of the sampledb-operator chart.
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "sampledb-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, else the release name when it already
contains the chart name, else <release>-<chart>. At most 63 characters (DNS label).
*/}}
{{- define "sampledb-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the cluster-scoped objects (ClusterRoles, ClusterRoleBindings): the full name prefixed with
the release namespace, so that releases in different namespaces never share or overwrite them.
*/}}
{{- define "sampledb-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "sampledb-operator.fullname" .) }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "sampledb-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object of the release carries. */}}
{{- define "sampledb-operator.labels" -}}
helm.sh/chart: {{ include "sampledb-operator.chart" . }}
{{ include "sampledb-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sampledb
{{- end }}

{{/* The labels that identify the release (selectors add a component). */}}
{{- define "sampledb-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sampledb-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of the operator Pods. */}}
{{- define "sampledb-operator.operatorSelectorLabels" -}}
{{ include "sampledb-operator.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the webhook Pods. */}}
{{- define "sampledb-operator.webhookSelectorLabels" -}}
{{ include "sampledb-operator.selectorLabels" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "sampledb-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sampledb-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook's ServiceAccount (always created: it has no permissions and no token). */}}
{{- define "sampledb-operator.webhookServiceAccountName" -}}
{{- default (printf "%s-webhook" (include "sampledb-operator.fullname" .)) .Values.webhook.serviceAccount.name }}
{{- end }}

{{/* The Secret with the webhook's tls.crt, tls.key and ca.crt (written by Helm or by cert-manager). */}}
{{- define "sampledb-operator.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "sampledb-operator.fullname" .)) .Values.webhook.tls.secretName }}
{{- end }}

{{/* The DNS name the API server calls the webhook by, and the serving certificate's common name. */}}
{{- define "sampledb-operator.webhookDNSName" -}}
{{- printf "%s.%s.svc" .Values.webhook.serviceName .Release.Namespace }}
{{- end }}

{{/* Every DNS name of the webhook Service, for the certificate's subjectAltNames. */}}
{{- define "sampledb-operator.webhookDNSNames" -}}
{{- $svc := .Values.webhook.serviceName }}
{{- $ns := .Release.Namespace -}}
- {{ $svc }}
- {{ printf "%s.%s" $svc $ns }}
- {{ printf "%s.%s.svc" $svc $ns }}
- {{ printf "%s.%s.svc.cluster.local" $svc $ns }}
{{- end }}

{{/* The operator image. */}}
{{- define "sampledb-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Lease the operator replicas elect their leader with. */}}
{{- define "sampledb-operator.leaseName" -}}
{{- default (include "sampledb-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Pod Security Standard "restricted": the Pod-level security context of every Pod of the chart.
fsGroup makes the mounted Secret files (mode 0440) readable by the non-root user.
*/}}
{{- define "sampledb-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod Security Standard "restricted": the security context of every container of the chart. */}}
{{- define "sampledb-operator.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
RBAC. The rules come from files/rbac-rules.yaml, which `make chart-sync` copies from
config/rbac/role.yaml (the single source); nothing here repeats a rule.

"sampledb-operator.rbacRules" renders {rules: [...], namespaced: [...], cluster: [...]} as YAML:
a rule is cluster-scoped when every resource it names is (the CRDs, say), namespaced when none is;
a rule mixing both fails the render, as does any wildcard.
*/}}
{{- define "sampledb-operator.clusterScopedResources" -}}
- apiextensions.k8s.io/customresourcedefinitions
- apiregistration.k8s.io/apiservices
- admissionregistration.k8s.io/mutatingwebhookconfigurations
- admissionregistration.k8s.io/validatingwebhookconfigurations
- admissionregistration.k8s.io/validatingadmissionpolicies
- admissionregistration.k8s.io/validatingadmissionpolicybindings
- rbac.authorization.k8s.io/clusterroles
- rbac.authorization.k8s.io/clusterrolebindings
- storage.k8s.io/storageclasses
- storage.k8s.io/csidrivers
- storage.k8s.io/csinodes
- storage.k8s.io/volumeattachments
- scheduling.k8s.io/priorityclasses
- node.k8s.io/runtimeclasses
- certificates.k8s.io/certificatesigningrequests
- authentication.k8s.io/tokenreviews
- authorization.k8s.io/subjectaccessreviews
- authorization.k8s.io/selfsubjectaccessreviews
- authorization.k8s.io/selfsubjectrulesreviews
- /namespaces
- /nodes
- /persistentvolumes
- /componentstatuses
{{- end }}

{{- define "sampledb-operator.rbacRules" -}}
{{- $file := .Files.Get "files/rbac-rules.yaml" }}
{{- if not $file }}
{{- fail "files/rbac-rules.yaml is missing from the chart: run `make chart-sync`" }}
{{- end }}
{{- $rules := (fromYaml $file).rules | default list }}
{{- if not $rules }}
{{- fail "files/rbac-rules.yaml has no rules: run `make chart-sync`" }}
{{- end }}
{{- $clusterScoped := include "sampledb-operator.clusterScopedResources" . | fromYamlArray }}
{{- $namespaced := list }}
{{- $cluster := list }}
{{- range $rules }}
{{- $rule := . }}
{{- range $field := list "apiGroups" "resources" "verbs" "resourceNames" "nonResourceURLs" }}
{{- if has "*" (get $rule $field | default list) }}
{{- fail (printf "files/rbac-rules.yaml: wildcard in %s of rule %s: list what the operator uses" $field (toJson $rule)) }}
{{- end }}
{{- end }}
{{- $scoped := 0 }}
{{- $total := 0 }}
{{- range $group := $rule.apiGroups | default list }}
{{- range $resource := $rule.resources | default list }}
{{- $total = add1 $total }}
{{- if has (printf "%s/%s" $group (first (splitList "/" $resource))) $clusterScoped }}
{{- $scoped = add1 $scoped }}
{{- end }}
{{- end }}
{{- end }}
{{- if or $rule.nonResourceURLs (and (gt $total 0) (eq $scoped $total)) }}
{{- $cluster = append $cluster $rule }}
{{- else if eq $scoped 0 }}
{{- $namespaced = append $namespaced $rule }}
{{- else }}
{{- fail (printf "files/rbac-rules.yaml: rule %s mixes cluster-scoped and namespaced resources: split it in config/rbac/role.yaml" (toJson $rule)) }}
{{- end }}
{{- end }}
{{- toYaml (dict "rules" $rules "namespaced" $namespaced "cluster" $cluster) }}
{{- end }}

{{/*
The webhook's TLS material when Helm manages it (webhook.certManager.enabled=false), computed once
per render and cached in .Values, so that the Secret and the Pod checksum annotations agree.

On upgrade the existing Secret is reused (lookup) unless webhook.tls.rotate is set, the certificate
expires within webhook.tls.renewBeforeDays (its expiry is recorded in an annotation, as templates
cannot parse certificates), the Service DNS name changed, or a key is missing. A rotation keeps the
previous CA in ca.crt after the new one, so that clients trusting the bundle accept the old and the
new serving certificate while Pods pick up the new files.
`helm template` and `--dry-run` cannot look up: they render fresh certificates every time.
*/}}
{{- define "sampledb-operator.webhookTLS" -}}
{{- if not (hasKey .Values "__sampledbWebhookTLS") }}
{{- $dnsName := include "sampledb-operator.webhookDNSName" . }}
{{- $days := int .Values.webhook.tls.validityDays }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "sampledb-operator.webhookSecretName" .) }}
{{- $data := dict }}
{{- $annotations := dict }}
{{- if $existing }}
{{- $data = $existing.data | default dict }}
{{- $annotations = $existing.metadata.annotations | default dict }}
{{- end }}
{{- $remaining := sub (toDate "2006-01-02T15:04:05Z07:00" (get $annotations "sampledb.io/tls-not-after") | unixEpoch | atoi) (now | unixEpoch | atoi) }}
{{- $complete := and (get $data "tls.crt") (get $data "tls.key") (get $data "ca.crt") }}
{{- $sameName := eq (get $annotations "sampledb.io/tls-dns-name") $dnsName }}
{{- $fresh := gt $remaining (mul (int .Values.webhook.tls.renewBeforeDays) 86400) }}
{{- $tls := dict }}
{{- if and $complete $sameName $fresh (not .Values.webhook.tls.rotate) }}
{{- $tls = dict "tls.crt" (get $data "tls.crt") "tls.key" (get $data "tls.key") "ca.crt" (get $data "ca.crt") "notAfter" (get $annotations "sampledb.io/tls-not-after") }}
{{- else }}
{{- $ca := genCA (printf "%s-webhook-ca" (include "sampledb-operator.fullname" .)) $days }}
{{- $cert := genSignedCert $dnsName nil (include "sampledb-operator.webhookDNSNames" . | fromYamlArray) $days $ca }}
{{- $bundle := $ca.Cert }}
{{- if and $complete (gt $remaining 0) }}
{{- $previous := regexFind "(?s)-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----" (get $data "ca.crt" | b64dec) }}
{{- if $previous }}
{{- $bundle = printf "%s\n%s\n" (trimSuffix "\n" $ca.Cert) $previous }}
{{- end }}
{{- end }}
{{- $notAfter := dateInZone "2006-01-02T15:04:05Z07:00" (now | dateModify (printf "+%dh" (mul $days 24))) "UTC" }}
{{- $tls = dict "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc) "ca.crt" ($bundle | b64enc) "notAfter" $notAfter }}
{{- end }}
{{- $_ := set $tls "dnsName" $dnsName }}
{{- $_ := set .Values "__sampledbWebhookTLS" $tls }}
{{- end }}
{{- toYaml (get .Values "__sampledbWebhookTLS") }}
{{- end }}

{{/* Pod annotation that rolls the Pods when the Helm-managed certificates change (not with cert-manager). */}}
{{- define "sampledb-operator.tlsChecksum" -}}
{{- if not .Values.webhook.certManager.enabled }}
{{- $tls := include "sampledb-operator.webhookTLS" . | fromYaml }}
checksum/webhook-tls: {{ printf "%s%s" (get $tls "ca.crt") (get $tls "tls.crt") | sha256sum }}
{{- end }}
{{- end }}
