"""Lists namespaces with the Python `kubernetes` client through the kubeconfig's context
(argv[1]), as an app built on it would: one name per line, or the error on stderr and exit 1."""
import sys

import kubernetes

try:
    kubernetes.config.load_kube_config(context=sys.argv[1])
    names = [n.metadata.name for n in kubernetes.client.CoreV1Api().list_namespace().items]
    print("\n".join(sorted(names)))
except Exception as e:  # the matrix records what the client says
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
