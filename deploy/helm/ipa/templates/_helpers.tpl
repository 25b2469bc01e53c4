{{- define "ipa.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- define "ipa.labels" -}}
app.kubernetes.io/name: ipa
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "ipa.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "ipa.agentTokenSecret" -}}
{{ .Values.agent.auth.existingSecret | default (printf "%s-agent-token" .Release.Name) }}
{{- end -}}
