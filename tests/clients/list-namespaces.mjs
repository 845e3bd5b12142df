// Lists namespaces with @kubernetes/client-node through the kubeconfig's context (argv[2]),
// as an app built on it would: one name per line, or the error on stderr and exit 1.
import * as k8s from "@kubernetes/client-node";

const kc = new k8s.KubeConfig();
kc.loadFromDefault();
kc.setCurrentContext(process.argv[2]);
try {
  const api = kc.makeApiClient(k8s.CoreV1Api);
  const list = await api.listNamespace();
  console.log(list.items.map((n) => n.metadata.name).sort().join("\n"));
} catch (e) {
  console.error(String(e?.cause ?? e?.message ?? e));
  process.exit(1);
}
