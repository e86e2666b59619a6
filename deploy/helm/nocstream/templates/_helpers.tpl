{{- define "nocstream.labels" -}}
app.kubernetes.io/name: nocstream
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "nocstream.selector" -}}
app.kubernetes.io/name: nocstream
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nocstream.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "nocstream.secretName" -}}
{{ .Values.postgres.existingSecret | default (printf "%s-nocstream" .Release.Name) }}
{{- end -}}

{{/* NOC_BOOTSTRAP, NOC_NAMESPACE, NOC_METRICS_ADDR from the ConfigMap; NOC_PG_DSN from the Secret. */}}
{{- define "nocstream.env" -}}
envFrom:
  - configMapRef:
      name: {{ .Release.Name }}-nocstream
  - secretRef:
      name: {{ include "nocstream.secretName" . }}
{{- end -}}

{{/* Liveness, readiness and startup probes on a port: /healthz and /readyz. */}}
{{- define "nocstream.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: {{ .root.Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .root.Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .root.Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: {{ .root.Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .root.Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .root.Values.probes.readiness.failureThreshold }}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: {{ .root.Values.probes.startup.periodSeconds }}
  timeoutSeconds: {{ .root.Values.probes.startup.timeoutSeconds }}
  failureThreshold: {{ .root.Values.probes.startup.failureThreshold }}
{{- end -}}
