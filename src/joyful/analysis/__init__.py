"""Everything that analyses a trained model: metrics, plots, t-SNE, the HTML report, explanations."""
