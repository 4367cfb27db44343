// Scaffolding for routes whose view another helper is writing in this same session; each
// route in routes.ts is switched to its real view as it lands.

export function notBuilt(name: string, title: string) {
  return function NotBuilt() {
    return (
      <section data-testid={`view-${name}`}>
        <h1>{title}</h1>
        <p class="muted">This view is not built yet.</p>
      </section>
    );
  };
}
