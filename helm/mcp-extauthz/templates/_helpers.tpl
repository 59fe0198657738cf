{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "mcp-extauthz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, or release-chart when the release name lacks the chart name. */}}
{{- define "mcp-extauthz.fullname" -}}
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

{{- define "mcp-extauthz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels (Kubernetes recommended labels + helm.sh/chart). */}}
{{- define "mcp-extauthz.labels" -}}
helm.sh/chart: {{ include "mcp-extauthz.chart" . }}
{{ include "mcp-extauthz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: authorizer
app.kubernetes.io/part-of: mcp-extauthz
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels: stable across upgrades (never add a version here). */}}
{{- define "mcp-extauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-extauthz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mcp-extauthz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcp-extauthz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcp-extauthz.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Where the policy comes from: "configMap" (chart-managed or existingConfigMap) or "secret". */}}
{{- define "mcp-extauthz.policyVolume" -}}
{{- if and .Values.existingConfigMap .Values.existingSecret }}
{{- fail "set at most one of existingConfigMap and existingSecret" }}
{{- end }}
{{- if .Values.existingSecret }}
secret:
  secretName: {{ .Values.existingSecret }}
{{- else }}
configMap:
  name: {{ default (printf "%s-policy" (include "mcp-extauthz.fullname" .)) .Values.existingConfigMap }}
{{- end }}
{{- end }}

{{/* The Service's in-cluster host name. */}}
{{- define "mcp-extauthz.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "mcp-extauthz.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "mcp-extauthz.istioNamespace" -}}
{{- default .Release.Namespace .Values.istio.targetNamespace }}
{{- end }}

{{/* Checks that span several values (the schema cannot compare two numbers). */}}
{{- define "mcp-extauthz.validate" -}}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) (addf .Values.drainSeconds 5) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least drainSeconds + 5 (%v): the service drains for up to drainSeconds after SIGTERM, then stops" .Values.terminationGracePeriodSeconds (addf .Values.drainSeconds 5)) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and .Values.tls.clientCA.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientCA.enabled needs tls.enabled" }}
{{- end }}
{{- include "mcp-extauthz.validateRedis" . }}
{{- include "mcp-extauthz.validateReplicas" . }}
{{- include "mcp-extauthz.validateNetworkPolicy" . }}
{{- end }}

{{/* Redis is configured: the URL comes from redis.url or from existingSecret. */}}
{{- define "mcp-extauthz.redis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* The Deployment's replicas: replicaCount, or 2 with Redis and 1 without when it is null. */}}
{{- define "mcp-extauthz.replicas" -}}
{{- if not (kindIs "invalid" .Values.replicaCount) }}{{ int .Values.replicaCount }}
{{- else if include "mcp-extauthz.redis" . }}2
{{- else }}1
{{- end }}
{{- end }}

{{/* The fewest pods that run at once: what a PodDisruptionBudget is measured against. */}}
{{- define "mcp-extauthz.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.minReplicas }}
{{- else }}{{ include "mcp-extauthz.replicas" . }}
{{- end }}
{{- end }}

{{/* More than one pod may run: state must be shared, and a PDB keeps one of them. */}}
{{- define "mcp-extauthz.multi" -}}
{{- if or .Values.autoscaling.enabled (gt (int (include "mcp-extauthz.replicas" .)) 1) }}true{{ end }}
{{- end }}

{{- define "mcp-extauthz.pdbEnabled" -}}
{{- $on := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "invalid" $on }}{{ include "mcp-extauthz.multi" . }}
{{- else if $on }}true
{{- end }}
{{- end }}

{{- define "mcp-extauthz.redisPrefix" -}}
{{- default (printf "%s/%s" .Release.Namespace .Release.Name) .Values.redis.prefix }}
{{- end }}

{{/* The port in redis.url, or "" (none given, or the URL is in a Secret). */}}
{{- define "mcp-extauthz.redisUrlPort" -}}
{{- if .Values.redis.url }}
{{- regexFind ":[0-9]+$" (get (urlParse .Values.redis.url) "host") | trimPrefix ":" }}
{{- end }}
{{- end }}

{{/* Ports the NetworkPolicy opens to Redis. */}}
{{- define "mcp-extauthz.redisPorts" -}}
{{- if .Values.redis.networkPolicy.ports }}
{{- toJson .Values.redis.networkPolicy.ports }}
{{- else }}
{{- toJson (list (int (default "6379" (include "mcp-extauthz.redisUrlPort" .)))) }}
{{- end }}
{{- end }}

{{- define "mcp-extauthz.validateRedis" -}}
{{- $r := .Values.redis }}
{{- range .Values.extraArgs }}
{{- if hasPrefix "--redis" . }}
{{- fail (printf "extraArgs %s: configure Redis with the redis.* values (the chart sizes replicas, the Secret env and the NetworkPolicy from them)" .) }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if and (hasPrefix "EXTAUTHZ_REDIS_" .name) (hasKey . "value") }}
{{- fail (printf "extraEnv %s holds a value in clear: Redis credentials come from a Secret (redis.existingSecret)" .name) }}
{{- end }}
{{- end }}
{{- if and $r.url $r.existingSecret $r.existingSecretKey }}
{{- fail (printf "set at most one of redis.url and redis.existingSecretKey (%q): the URL comes from one place. To keep only credentials in the Secret, set redis.existingSecretKey: \"\"" $r.existingSecretKey) }}
{{- end }}
{{- if and $r.existingSecret (not $r.existingSecretKey) (not $r.url) }}
{{- fail "redis.existingSecret without redis.existingSecretKey needs redis.url (no URL anywhere)" }}
{{- end }}
{{- if and $r.existingSecret (not (or $r.existingSecretKey $r.existingSecretPasswordKey $r.existingSecretUsernameKey)) }}
{{- fail "redis.existingSecret: name at least one key (existingSecretKey, existingSecretPasswordKey, existingSecretUsernameKey)" }}
{{- end }}
{{- if and (or $r.existingSecretPasswordKey $r.existingSecretUsernameKey) (not $r.existingSecret) }}
{{- fail "redis.existingSecretPasswordKey/existingSecretUsernameKey need redis.existingSecret (the Secret they are read from)" }}
{{- end }}
{{- if $r.url }}
{{- if contains ":" (get (urlParse $r.url) "userinfo") }}
{{- fail "redis.url holds a password: it would be in clear in the values, the manifest and the pod's args. Put it in a Secret: redis.existingSecret + redis.existingSecretPasswordKey (-> $EXTAUTHZ_REDIS_PASSWORD)" }}
{{- end }}
{{- end }}
{{- $tls := or $r.tls.ca.secretName $r.tls.clientCert.secretName }}
{{- if and $tls (not (include "mcp-extauthz.redis" .)) }}
{{- fail "redis.tls needs Redis (redis.url or redis.existingSecret)" }}
{{- end }}
{{- if and $tls $r.url (not (hasPrefix "rediss://" $r.url)) }}
{{- fail (printf "redis.tls needs a rediss:// URL, not %s" (get (urlParse $r.url) "scheme")) }}
{{- end }}
{{- end }}

{{- define "mcp-extauthz.validateReplicas" -}}
{{- $a := .Values.autoscaling }}
{{- if not (include "mcp-extauthz.redis" .) }}
{{- if $a.enabled }}
{{- fail "autoscaling.enabled needs Redis (redis.url or redis.existingSecret): without shared state each replica keeps its own session owners, approvals, learned specs and risk scores, and a decision depends on which replica a request reaches (split brain). README \"Replicas and Redis\"; without Redis stay at one replica and use --workers N (extraArgs) for more cores" }}
{{- end }}
{{- if gt (int (include "mcp-extauthz.replicas" .)) 1 }}
{{- fail (printf "replicaCount %v needs Redis (redis.url or redis.existingSecret): without shared state each replica keeps its own session owners, approvals, learned specs and risk scores, and a decision depends on which replica a request reaches (split brain). README \"Replicas and Redis\"; without Redis stay at one replica and use --workers N (extraArgs) for more cores" .Values.replicaCount) }}
{{- end }}
{{- end }}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v)" $a.minReplicas $a.maxReplicas) }}
{{- end }}
{{- if include "mcp-extauthz.pdbEnabled" . }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $min := int (include "mcp-extauthz.minReplicas" .) }}
{{- if not (kindIs "invalid" $pdb.minAvailable) }}
{{- $m := $pdb.minAvailable }}
{{- if or (and (kindIs "string" $m) (eq $m "100%")) (and (not (kindIs "string" $m)) (ge (int $m) $min)) }}
{{- fail (printf "podDisruptionBudget.minAvailable %v with %d replica(s) would block every node drain: use maxUnavailable 1 (the default) or fewer" $m $min) }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" $pdb.maxUnavailable) }}
{{- if or (eq (toString $pdb.maxUnavailable) "0") (eq (toString $pdb.maxUnavailable) "0%") }}
{{- fail "podDisruptionBudget.maxUnavailable 0 would block every node drain" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mcp-extauthz.validateNetworkPolicy" -}}
{{- $r := .Values.redis }}
{{- $egress := and .Values.networkPolicy.enabled .Values.networkPolicy.egress.enabled }}
{{- if and $egress (include "mcp-extauthz.redis" .) (not $r.networkPolicy.to) }}
{{- fail "networkPolicy egress is restricted and Redis is configured: set redis.networkPolicy.to (where Redis runs: podSelector/namespaceSelector, or ipBlock CIDRs for a managed Redis), or the replicas cannot reach it" }}
{{- end }}
{{- $port := include "mcp-extauthz.redisUrlPort" . }}
{{- if and $port $r.networkPolicy.ports }}
{{- $found := false }}
{{- range $r.networkPolicy.ports }}{{ if eq (int .) (int $port) }}{{ $found = true }}{{ end }}{{ end }}
{{- if not $found }}
{{- fail (printf "redis.networkPolicy.ports %v does not include the port of redis.url (%s)" $r.networkPolicy.ports $port) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A label map as `k=v,k2=v2` (sorted). */}}
{{- define "mcp-extauthz.selectorString" -}}
{{- $out := list }}
{{- range $k, $v := . }}
{{- $out = append $out (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $out }}
{{- end }}
