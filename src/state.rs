//! Persisted app state: per-cluster ports, favourites, settings.
