{{/* Names and labels shared by every template. */}}
{{- define "dbprov-agent.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dbprov-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dbprov-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dbprov-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dbprov-agent.labels" -}}
{{ include "dbprov-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dbprov
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "dbprov-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dbprov-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dbprov-agent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding tls.crt, tls.key and ca.crt. */}}
{{- define "dbprov-agent.tlsSecret" -}}
{{- if .Values.tls.bootstrap.enabled -}}
{{- fail "tls.bootstrap.enabled: the agent has no TLS Secret" -}}
{{- else if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "dbprov-agent.fullname" .) -}}
{{- else -}}
{{- required "set tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt) or enable tls.certManager" .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the agent gets Secret access in. */}}
{{- define "dbprov-agent.namespaces" -}}
{{- if .Values.rbac.namespaces -}}
{{- join "," .Values.rbac.namespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Secret holding the bootstrap token ("" when none is configured). */}}
{{- define "dbprov-agent.tokenSecret" -}}
{{- if .Values.tls.bootstrap.token -}}
{{- printf "%s-bootstrap-token" (include "dbprov-agent.fullname" .) -}}
{{- else -}}
{{- .Values.tls.bootstrap.tokenSecret -}}
{{- end -}}
{{- end -}}

{{/*
ServiceAccount annotations: serviceAccount.annotations plus those cloudIdentity asks for (the
cloud's webhooks key on them).
*/}}
{{- define "dbprov-agent.serviceAccountAnnotations" -}}
{{- $a := deepCopy (.Values.serviceAccount.annotations | default dict) -}}
{{- with .Values.cloudIdentity.aws.roleArn }}{{ $_ := set $a "eks.amazonaws.com/role-arn" . }}{{ end -}}
{{- with .Values.cloudIdentity.gcp.serviceAccount }}{{ $_ := set $a "iam.gke.io/gcp-service-account" . }}{{ end -}}
{{- with .Values.cloudIdentity.azure.clientId }}{{ $_ := set $a "azure.workload.identity/client-id" . }}{{ end -}}
{{- if $a }}{{ toYaml $a }}{{ end -}}
{{- end }}

{{/* Path of the projected cloud identity token. */}}
{{- define "dbprov-agent.cloudTokenFile" -}}
{{ printf "%s/%s" (.Values.cloudIdentity.token.mountPath | trimSuffix "/") .Values.cloudIdentity.token.fileName }}
{{- end }}
