{{/* ---------------------------------------------------------------- names and labels */}}

{{- define "aks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix. Kept to 45 characters so that suffixes such as "-webhook-tls" fit. */}}
{{- define "aks.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aks.webhookName" -}}
{{- printf "%s-webhook" (include "aks.fullname" .) -}}
{{- end -}}

{{/* Namespace of the Airflow workers (ScaledObjects, TriggerAuthentication, KEDA client Secret). */}}
{{- define "aks.airflowNamespace" -}}
{{- default .Release.Namespace .Values.airflow.namespace -}}
{{- end -}}

{{/* Labels. Call with (dict "ctx" $ "component" "scaler"). */}}
{{- define "aks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aks.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aks.labels" -}}
{{ include "aks.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: airflow-keda-scaler
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "aks.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "aks.scalerServiceAccountName" -}}
{{- if .Values.scaler.serviceAccount.create -}}
{{- default (include "aks.fullname" .) .Values.scaler.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.scaler.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "aks.webhookServiceAccountName" -}}
{{- if .Values.webhook.serviceAccount.create -}}
{{- default (include "aks.webhookName" .) .Values.webhook.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.webhook.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* host:port KEDA dials. */}}
{{- define "aks.scalerAddress" -}}
{{- printf "%s.%s.svc.%s:9090" (include "aks.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* Pod anti-affinity over nodes. Call with (dict "ctx" $ "component" "scaler" "mode" "preferred"). */}}
{{- define "aks.podAntiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "aks.selectorLabels" . | fromYaml)) -}}
{{- if eq .mode "required" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    {{- toYaml (list $term) | nindent 4 }}
{{- else if eq .mode "preferred" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- database */}}

{{/* Secret name / key / env var the scaler reads the database URL from. */}}
{{- define "aks.databaseSource" -}}
{{- $db := .Values.database -}}
{{- if $db.url -}}
secret: {{ printf "%s-database" (include "aks.fullname" .) }}
key: url
env: AIRFLOW_KEDA_SCALER_DATABASE_URL
{{- else if $db.existingSecret.name -}}
secret: {{ $db.existingSecret.name }}
key: {{ $db.existingSecret.key }}
env: AIRFLOW_KEDA_SCALER_DATABASE_URL
{{- else -}}
secret: {{ printf "%s-metadata" .Values.airflow.fullname }}
key: {{ $db.existingSecret.key }}
env: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- worker queues */}}

{{/*
The worker queues with every default applied, validated. Returns YAML {items: [...]}, each item
{entry: <worker-queue file entry>, target: <scaleTargetRef>}. The worker-queue file and the
ScaledObjects are both rendered from this one list.
*/}}
{{- define "aks.workerQueues" -}}
{{- $d := .Values.workerQueueDefaults -}}
{{- $items := list -}}
{{- $seen := dict -}}
{{- if not .Values.workerQueues -}}
{{- fail "workerQueues: list at least one worker queue" -}}
{{- end -}}
{{- range $i, $wq := .Values.workerQueues -}}
  {{- if hasKey $seen $wq.name -}}
  {{- fail (printf "workerQueues[%d]: worker queue name %q is used twice" $i $wq.name) -}}
  {{- end -}}
  {{- $_ := set $seen $wq.name true -}}
  {{- $entry := dict "name" $wq.name -}}
  {{- $_ := set $entry "queues" (default (list $wq.name) $wq.queues) -}}
  {{- $_ := set $entry "maxTasksPerWorker" (int (ternary $wq.maxTasksPerWorker $d.maxTasksPerWorker (hasKey $wq "maxTasksPerWorker"))) -}}
  {{- $_ := set $entry "minWorkers" (int (ternary $wq.minWorkers $d.minWorkers (hasKey $wq "minWorkers"))) -}}
  {{- $_ := set $entry "maxWorkers" (int (ternary $wq.maxWorkers $d.maxWorkers (hasKey $wq "maxWorkers"))) -}}
  {{- range $key := list "activationTasks" "executorNames" "defaultExecutor" -}}
    {{- if hasKey $wq $key -}}
    {{- $_ := set $entry $key (get $wq $key) -}}
    {{- end -}}
  {{- end -}}
  {{- if lt $entry.maxTasksPerWorker 1 -}}
  {{- fail (printf "workerQueues[%d] (%s): maxTasksPerWorker must be at least 1" $i $wq.name) -}}
  {{- end -}}
  {{- if lt $entry.maxWorkers 1 -}}
  {{- fail (printf "workerQueues[%d] (%s): maxWorkers must be at least 1" $i $wq.name) -}}
  {{- end -}}
  {{- if gt $entry.minWorkers $entry.maxWorkers -}}
  {{- fail (printf "workerQueues[%d] (%s): minWorkers (%d) is greater than maxWorkers (%d)" $i $wq.name $entry.minWorkers $entry.maxWorkers) -}}
  {{- end -}}
  {{- $ref := $wq.scaleTargetRef | default dict -}}
  {{- $defaultName := ternary (printf "%s-worker" $.Values.airflow.fullname) (printf "%s-worker-%s" $.Values.airflow.fullname $wq.name) (eq $wq.name "default") -}}
  {{- $target := dict "apiVersion" (default "apps/v1" $ref.apiVersion) "kind" (default $d.targetKind $ref.kind) "name" (default $defaultName $ref.name) -}}
  {{- /* The scaler watches apps/v1 Deployments and StatefulSets; other targets are scaled but not watched. */ -}}
  {{- if and (eq $target.apiVersion "apps/v1") (has $target.kind (list "Deployment" "StatefulSet")) -}}
  {{- $_ := set $entry "scaleTargetRef" (dict "kind" $target.kind "name" $target.name) -}}
  {{- end -}}
  {{- $items = append $items (dict "entry" $entry "target" $target) -}}
{{- end -}}
{{- toYaml (dict "items" $items) -}}
{{- end -}}

{{/*
The [core] parallelism to set for the configured worker queues, Astro's current definition:
(sum of maxWorkers) x (sum of maxTasksPerWorker). Returns YAML {workers, tasks, value}.
*/}}
{{- define "aks.parallelism" -}}
{{- $workers := 0 -}}
{{- $tasks := 0 -}}
{{- range (include "aks.workerQueues" . | fromYaml).items -}}
{{- $workers = add $workers .entry.maxWorkers -}}
{{- $tasks = add $tasks .entry.maxTasksPerWorker -}}
{{- end -}}
{{- toYaml (dict "workers" $workers "tasks" $tasks "value" (mul $workers $tasks)) -}}
{{- end -}}

{{/* ---------------------------------------------------------------- certificates */}}

{{- define "aks.certSource" -}}
{{- .Values.certificates.source -}}
{{- end -}}

{{/* Which chart-managed certificates are needed (not given as existing Secrets). */}}
{{- define "aks.needScalerCert" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}true{{ end -}}
{{- end -}}
{{- define "aks.needKedaClientCert" -}}
{{- if and .Values.tls.enabled (not .Values.tls.kedaClientSecret) }}true{{ end -}}
{{- end -}}
{{- define "aks.needWebhookCert" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.existingSecret) }}true{{ end -}}
{{- end -}}
{{- define "aks.needCA" -}}
{{- if or (include "aks.needScalerCert" .) (include "aks.needKedaClientCert" .) (include "aks.needWebhookCert" .) }}true{{ end -}}
{{- end -}}

{{- define "aks.caSecretName" -}}{{ include "aks.fullname" . }}-ca{{- end -}}
{{- define "aks.scalerTlsSecretName" -}}{{ default (printf "%s-tls" (include "aks.fullname" .)) .Values.tls.existingSecret }}{{- end -}}
{{- define "aks.kedaClientSecretName" -}}{{ default (printf "%s-keda-client" (include "aks.fullname" .)) .Values.tls.kedaClientSecret }}{{- end -}}
{{- define "aks.webhookTlsSecretName" -}}{{ default (printf "%s-webhook-tls" (include "aks.fullname" .)) .Values.webhook.existingSecret }}{{- end -}}

{{/* The scaler's server names: the Service in every form a client may dial. */}}
{{- define "aks.serviceDnsNames" -}}
{{- $svc := .svc -}}
{{- $ns := .ctx.Release.Namespace -}}
{{- toYaml (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .ctx.Values.clusterDomain)) -}}
{{- end -}}

{{/*
Chart-generated PKI (certificates.source=generate), computed once per render and memoized.
Everything that already exists in the cluster is read back with `lookup` and reused, so a
`helm upgrade` never makes a new CA (which would break every client that trusts the old one) nor
new leaf certificates. A leaf is re-signed only if it is missing or was signed by another CA.
Returns YAML: {ca: {crt, key}, scaler: {crt, key}, kedaClient: {crt, key}, webhook: {crt, key}}.
*/}}
{{- define "aks.pki" -}}
{{- if not (hasKey .Values "__aksPki") -}}
{{- $days := int .Values.certificates.generate.validityDays -}}
{{- $fullname := include "aks.fullname" . -}}
{{- $pki := dict -}}
{{- $ca := dict -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "aks.caSecretName" .) -}}
{{- $existingData := (get (default dict $existing) "data") | default dict -}}
{{- if and (get $existingData "tls.crt") (get $existingData "tls.key") -}}
{{- $ca = buildCustomCert (get $existingData "tls.crt") (get $existingData "tls.key") -}}
{{- else -}}
{{- $ca = genCA (printf "%s-ca" $fullname) $days -}}
{{- end -}}
{{- $_ := set $pki "ca" (dict "crt" $ca.Cert "key" $ca.Key) -}}
{{- $leaves := list -}}
{{- if include "aks.needScalerCert" . -}}
{{- $leaves = append $leaves (dict "id" "scaler" "ns" .Release.Namespace "secret" (include "aks.scalerTlsSecretName" .) "cn" $fullname "dns" (include "aks.serviceDnsNames" (dict "ctx" . "svc" $fullname) | fromYamlArray)) -}}
{{- end -}}
{{- if include "aks.needKedaClientCert" . -}}
{{- $leaves = append $leaves (dict "id" "kedaClient" "ns" (include "aks.airflowNamespace" .) "secret" (include "aks.kedaClientSecretName" .) "cn" "keda-operator" "dns" list) -}}
{{- end -}}
{{- if include "aks.needWebhookCert" . -}}
{{- $svc := include "aks.webhookName" . -}}
{{- $leaves = append $leaves (dict "id" "webhook" "ns" .Release.Namespace "secret" (include "aks.webhookTlsSecretName" .) "cn" $svc "dns" (include "aks.serviceDnsNames" (dict "ctx" . "svc" $svc) | fromYamlArray)) -}}
{{- end -}}
{{- range $leaf := $leaves -}}
{{- $old := lookup "v1" "Secret" $leaf.ns $leaf.secret -}}
{{- $oldData := (get (default dict $old) "data") | default dict -}}
{{- if and (get $oldData "tls.crt") (get $oldData "tls.key") (eq (get $oldData "ca.crt") (b64enc $ca.Cert)) -}}
{{- $_ := set $pki $leaf.id (dict "crt" (b64dec (get $oldData "tls.crt")) "key" (b64dec (get $oldData "tls.key"))) -}}
{{- else -}}
{{- $cert := genSignedCert $leaf.cn nil $leaf.dns $days $ca -}}
{{- $_ := set $pki $leaf.id (dict "crt" $cert.Cert "key" $cert.Key) -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values "__aksPki" $pki -}}
{{- end -}}
{{- toYaml (get .Values "__aksPki") -}}
{{- end -}}

{{/* The CA bundle (PEM) of the webhook's serving certificate, for caBundle (source=generate). */}}
{{- define "aks.webhookCaBundle" -}}
{{- if .Values.webhook.existingSecret -}}
{{- $s := lookup "v1" "Secret" .Release.Namespace .Values.webhook.existingSecret -}}
{{- $data := (get (default dict $s) "data") | default dict -}}
{{- get $data "ca.crt" -}}
{{- else -}}
{{- (include "aks.pki" . | fromYaml).ca.crt | b64enc -}}
{{- end -}}
{{- end -}}

{{/* cert-manager issuerRef for leaf certificates. */}}
{{- define "aks.issuerRef" -}}
{{- $ref := .Values.certificates.certManager.issuerRef -}}
{{- if $ref.name -}}
name: {{ $ref.name }}
kind: {{ default "Issuer" $ref.kind }}
group: {{ default "cert-manager.io" $ref.group }}
{{- else -}}
name: {{ include "aks.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- end -}}
{{- end -}}

{{/* Fails early on combinations that cannot work. */}}
{{- define "aks.validate" -}}
{{- include "aks.validateDatabaseSecret" . -}}
{{- if not (has .Values.certificates.source (list "generate" "certManager")) -}}
{{- fail "certificates.source must be generate or certManager" -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.tls.existingSecret (not .Values.tls.kedaClientSecret) -}}
{{- fail "tls.existingSecret is set: also set tls.kedaClientSecret (a Secret in the Airflow namespace with ca.crt, and tls.crt/tls.key for mTLS), since the chart cannot sign a client certificate without your CA's key" -}}
{{- end -}}
{{- if and .Values.webhook.enabled (has .Release.Namespace .Values.webhook.namespaces) -}}
{{- fail (printf "webhook.namespaces lists the release namespace %q, which the webhook always excludes (it must not intercept its own pods): install the chart in a namespace of its own" .Release.Namespace) -}}
{{- end -}}
{{- if and .Values.tls.enabled (include "aks.needKedaClientCert" .) (eq .Values.certificates.source "certManager") (ne (include "aks.airflowNamespace" .) .Release.Namespace) (ne (default "Issuer" .Values.certificates.certManager.issuerRef.kind) "ClusterIssuer") -}}
{{- fail "certificates.source=certManager with airflow.namespace different from the release namespace: KEDA's client certificate must be issued in the Airflow namespace, so set certificates.certManager.issuerRef to a ClusterIssuer (or use tls.kedaClientSecret)" -}}
{{- end -}}
{{- end -}}

{{/*
The Secret the scaler reads the database URL from must exist before the pod can start (else the
pod waits in CreateContainerConfigError). When Helm can read the cluster (`helm install` /
`upgrade`), refuse to install without it, naming the Secret and the fix. Offline rendering
(`helm template`, GitOps tools) cannot check: listing the release namespace's Secrets returns
nothing there, and the check is skipped. A URL given as `database.url` is kept in a Secret the
chart makes itself.
*/}}
{{- define "aks.validateDatabaseSecret" -}}
{{- if not .Values.database.url -}}
{{- $src := include "aks.databaseSource" . | fromYaml -}}
{{- $online := lookup "v1" "Secret" .Release.Namespace "" -}}
{{- if $online -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace $src.secret -}}
{{- $fix := "" -}}
{{- if .Values.database.existingSecret.name -}}
{{- $fix = "create it (kubectl create secret generic ... --from-literal=...=<URL>) or correct database.existingSecret" -}}
{{- else -}}
{{- $fix = printf "install the Apache Airflow chart (release %q) in this namespace first; if Airflow uses data.metadataSecretName, set database.existingSecret to that Secret; or give the URL in a Secret of your own (database.existingSecret, see docs/helm.md)" .Values.airflow.fullname -}}
{{- end -}}
{{- if not $secret -}}
{{- fail (printf "the database URL Secret %q (key %q) does not exist in namespace %q: %s" $src.secret $src.key .Release.Namespace $fix) -}}
{{- else if not (hasKey (default dict $secret.data) $src.key) -}}
{{- fail (printf "the database URL Secret %q in namespace %q has no key %q: %s" $src.secret .Release.Namespace $src.key $fix) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
