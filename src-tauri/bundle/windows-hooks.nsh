; Hooks into the Tauri NSIS installer: the command-line tool `k8s-tunnels.exe` is installed
; beside the app, and these put that folder on the user's PATH (and take it off again), so it
; runs from any terminal opened after the install. User scope (HKCU): no administrator needed,
; as for the per-user install itself.
;
; The folder reaches PowerShell through an environment variable, not spliced into the command,
; so a path with quotes in it (C:\Users\O'Brien\...) cannot break it. The registry value is read
; and written unexpanded, so the user's other entries keep their %VARIABLES%.

!include WinMessages.nsh

!macro K8S_TUNNELS_USER_PATH ACTION
  System::Call 'Kernel32::SetEnvironmentVariable(t "K8S_TUNNELS_DIR", t "$INSTDIR")i'
  nsExec::ExecToLog `powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -Command "$$dir = $$env:K8S_TUNNELS_DIR; $$key = [Microsoft.Win32.Registry]::CurrentUser.OpenSubKey('Environment', $$true); $$old = [string]$$key.GetValue('Path', '', 'DoNotExpandEnvironmentNames'); $$parts = @($$old -split ';' | Where-Object { $$_ -ne '' -and $$_ -ne $$dir }); if ('${ACTION}' -eq 'add') { $$parts += $$dir }; $$key.SetValue('Path', ($$parts -join ';'), 'ExpandString')"`
  Pop $0
  ; Tell running programs (Explorer, new terminals) that the environment changed.
  SendMessage ${HWND_BROADCAST} ${WM_SETTINGCHANGE} 0 "STR:Environment" /TIMEOUT=5000
!macroend

!macro NSIS_HOOK_POSTINSTALL
  !insertmacro K8S_TUNNELS_USER_PATH add
!macroend

!macro NSIS_HOOK_POSTUNINSTALL
  !insertmacro K8S_TUNNELS_USER_PATH remove
!macroend
