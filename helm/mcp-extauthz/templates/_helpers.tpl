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
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "set at most one of redis.url and redis.existingSecret" }}
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
