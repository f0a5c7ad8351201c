"""Pictures for people: BEV previews of occupancy and layouts (`bev`), rendered-map mosaics (`render`)."""
